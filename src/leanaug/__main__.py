from leanaug.cli.main import main

main()
