"""Every public name has a numpydoc docstring with an example, and the examples run (as doctests):
the parts that would train or serve are marked `# doctest: +SKIP`, the rest runs here in seconds."""

import doctest
import sys

import pytest

import ensemble
from classifier import combiner

PUBLIC = [name for name in ensemble.__all__ if name != "__version__"]
DOCUMENTED = [(name, getattr(ensemble, name)) for name in PUBLIC] + [("fit_combiner", combiner.fit_combiner),
                                                                   ("EnsembleCombiner", combiner.EnsembleCombiner)]


@pytest.mark.parametrize("name, obj", DOCUMENTED, ids=[name for name, _ in DOCUMENTED])
def test_the_public_name_has_a_numpydoc_example(name, obj):
    doc = obj.__doc__ or ""
    assert "Examples\n" in doc and "--------" in doc and ">>>" in doc, f"{name} has no numpydoc Examples section"


@pytest.mark.parametrize("name, obj", DOCUMENTED, ids=[name for name, _ in DOCUMENTED])
def test_the_examples_run(name, obj):
    module = dict(vars(sys.modules[obj.__module__]), ensemble=ensemble)  # as `python -m doctest` sees the file
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs=module)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0 and results.failed == 0
