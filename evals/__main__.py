from corral_runner.cli import main

main()
