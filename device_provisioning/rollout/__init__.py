"""Staged rollouts: the rollout file, the stages and their gates, plan/apply/status.

Above :mod:`device_provisioning.aws` (each stage is an OTA update or job made by :func:`aws.ota.create_ota`)
and :mod:`device_provisioning.fleet` (the inventory and the fleet pre-flight the stages share out).
"""

from device_provisioning.rollout.apply import (
    RolloutContext,
    RolloutReport,
    apply_rollout,
    assign_devices,
    rollout_status,
    stage_group_name,
    stage_job_id,
)
from device_provisioning.rollout.gates import StageReport, cannot_pass, evaluate_gate
from device_provisioning.rollout.rollout_file import Gate, RolloutPlan, Signing, Stage, load_rollout

__all__ = [
    "Gate",
    "RolloutContext",
    "RolloutPlan",
    "RolloutReport",
    "Signing",
    "Stage",
    "StageReport",
    "apply_rollout",
    "assign_devices",
    "cannot_pass",
    "evaluate_gate",
    "load_rollout",
    "rollout_status",
    "stage_group_name",
    "stage_job_id",
]
