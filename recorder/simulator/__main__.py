from recorder.cli.simulate import main

main()
