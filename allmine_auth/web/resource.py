"""The base of every API view: a ``MethodView`` whose request runs in one unit of work."""

import functools

from flask.views import MethodView

from allmine_auth.store.unit_of_work import unit_of_work


def in_unit_of_work(view):
    """Run ``view`` in one unit of work: commit on success, roll back on failure (``store.unit_of_work``)."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        with unit_of_work():
            return view(*args, **kwargs)

    return wrapped


class Resource(MethodView):
    """A group of operations on one URL; each request is one unit of work."""

    decorators = (in_unit_of_work,)
    # One instance serves every request (Flask builds one per request by default): the views keep no
    # state on ``self``, so building one per request would only cost the call.
    init_every_request = False

    def __init_subclass__(cls, **kwargs):
        """Refuse, at import, a view whose own ``decorators`` (they replace these) lack the unit of work."""
        super().__init_subclass__(**kwargs)
        if not cls.decorators or cls.decorators[0] is not in_unit_of_work:
            raise TypeError(f"{cls.__name__}.decorators must start with in_unit_of_work (innermost)")
