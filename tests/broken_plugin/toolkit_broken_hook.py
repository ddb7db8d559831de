from toolkit import DatasetSpec, hookimpl


@hookimpl
def register_pruners(register):
    raise RuntimeError("hook failed on purpose")


@hookimpl
def register_models(register):
    register("not a ModelSpec")


@hookimpl
def register_datasets(register):
    register(DatasetSpec("synthetic", "tries to take over a built-in name", lambda request: None, path="none"))
