from device_provisioning.cli import run

run()
