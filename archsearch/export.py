"""``python -m archsearch.export``: the command's entry point (see :mod:`archsearch.cli.export`)."""

if __name__ == "__main__":
    from archsearch.cli.export import main

    main()
