"""``python -m binclf`` runs the command line."""

from binclf.cli import main

if __name__ == "__main__":
    main()
