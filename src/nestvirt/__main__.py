from nestvirt.cli import run

run()
