"""The pieces that make a parallel sweep's jobs cheap: a JobReturn pickled by plain pickle
(trainlab.search.pickling), and the collector paused while a script imports, then frozen
(trainlab.heap)."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
import textwrap

import pytest

from trainlab.search.pickling import pickled


def test_a_class_imported_twice_is_pickled_by_its_name(tmp_path, monkeypatch):
    (tmp_path / "twice_imported.py").write_text("class Conf:\n    x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("twice_imported")
    old = module.Conf()
    importlib.reload(module)  # as Hydra's plugin scan does: the module now holds another class
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(old)
    back = pickle.loads(pickled({"node": old, "kind": type(old)}))
    assert isinstance(back["node"], module.Conf) and back["kind"] is module.Conf
    sys.modules.pop("twice_imported")


def test_what_plain_pickle_cannot_take_is_refused_as_pickle_refuses_it():
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickled(lambda: 1)  # a lambda: write_result falls back to cloudpickle for it


def test_the_collector_is_paused_until_the_imports_are_frozen():
    script = textwrap.dedent(
        """
        import gc
        from trainlab.heap import freeze_imports, pause_collections
        freeze_imports()  # not paused: nothing frozen
        assert gc.isenabled() and gc.get_freeze_count() == 0
        pause_collections()
        assert not gc.isenabled()
        import json, decimal  # the imports
        freeze_imports()
        assert gc.isenabled() and gc.get_freeze_count() > 1000
        frozen = gc.get_freeze_count()
        freeze_imports()  # once per process
        assert gc.get_freeze_count() == frozen
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize(
    ("launcher", "back_on"),
    [
        ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", True),
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", False),
        ("hydra_plugins.trainlab_launchers.joblib_launcher.ProcessPerJobLauncher", False),
    ],
)
def test_a_sweep_whose_jobs_run_elsewhere_collects_again_at_once(launcher, back_on):
    script = textwrap.dedent(
        f"""
        import gc
        from trainlab.heap import pause_collections, unpause_for_launcher
        pause_collections()
        unpause_for_launcher({launcher!r})
        print(gc.isenabled())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == str(back_on), result.stderr
