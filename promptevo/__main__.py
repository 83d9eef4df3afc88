from promptevo.cli import main

main()
