"""The ``sentiment`` commands, one module per family; each declares its arguments beside the code that runs them.

    stream.py   demo, worker, produce, consume, movies   the stream and its data
    db.py       db upgrade                               the database schema
    model.py    train, model add|list|promote|...        making and rolling out models
    study.py    tune, explore, evaluate, settings        studying data, models and settings
    local.py    serve, local up, data prepare            services and data on this machine
    options.py  the setting options (--broker, --database-url, ...) several commands share

A family module has a ``TITLE`` (its heading in ``sentiment --help``) and ``register(sub)``, which adds its
commands to the subparsers ``sub``, each with ``set_defaults(func=handler)``. Heavy libraries (TensorFlow, Faust,
SQLAlchemy) are imported inside the handlers only, so ``sentiment --help`` stays quick. ``sentiment/cli.py`` lists
the families and runs ``main()``.
"""
