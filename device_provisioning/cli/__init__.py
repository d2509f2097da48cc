from device_provisioning.cli.legacy import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
