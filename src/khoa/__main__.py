from khoa.cli.main import main

main()
