"""Figures and the report page, drawn from what the runner saved."""


def write_report(output_dir, runs):
    pass
