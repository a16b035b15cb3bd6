from pgops.cli import main

main()
