from toolkit import hookimpl


@hookimpl
def register_pruners(register):
    raise RuntimeError("hook failed on purpose")
