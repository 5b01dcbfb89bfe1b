"""``python -m archsearch.report``: the command's entry point (see :mod:`archsearch.cli.report`)."""

if __name__ == "__main__":
    from archsearch.cli.report import main

    main()
