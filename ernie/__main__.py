from ernie.cli import main

main()
