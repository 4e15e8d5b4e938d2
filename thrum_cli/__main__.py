"""``python -m thrum_cli``: the same as the ``thrum`` executable."""

from thrum_cli.main import main

if __name__ == "__main__":
    main()
