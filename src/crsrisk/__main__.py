from crsrisk.cli import app

app(prog_name="crsrisk")
