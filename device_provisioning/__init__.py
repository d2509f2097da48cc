"""esp-ota-provisioning device side."""
