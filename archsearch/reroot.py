"""``python -m archsearch.reroot``: the command's entry point (see :mod:`archsearch.cli.reroot`)."""

if __name__ == "__main__":
    from archsearch.cli.reroot import main

    main()
