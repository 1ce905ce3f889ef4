import sys

if sys.argv[1:2] == ["collect"]:
    # The supervisor's collectors: straight to their lean entry point (no typer).
    from recorder.cli.collect import main as collect_main

    sys.exit(collect_main(sys.argv[2:]))

from recorder.cli.main import main

main()
