"""Every API view runs in one unit of work (``web/resource.py``), the rate-limited ones too."""

import pytest

from allmine_auth.web.resource import Resource, in_unit_of_work


def test_every_resource_view_runs_in_a_unit_of_work(app):
    views = {
        view.view_class.__name__: view.view_class
        for view in app.view_functions.values()
        if isinstance(getattr(view, "view_class", None), type) and issubclass(view.view_class, Resource)
    }
    assert {"SendPhoneCode", "VerifyPhoneCode", "Refresh", "Me"} <= set(views)
    # A view's own ``decorators`` replace Resource's: each lists the unit of work again, first (innermost),
    # so its limits are checked before the transaction opens.
    assert [name for name, view in views.items() if view.decorators[0] is not in_unit_of_work] == []


def test_a_view_that_leaves_out_the_unit_of_work_is_refused_at_import():

    def limit(view):
        return view

    with pytest.raises(TypeError, match="must start with in_unit_of_work"):

        class Careless(Resource):
            decorators = [limit]

    class Careful(Resource):
        decorators = [in_unit_of_work, limit]

    assert Careful.decorators[0] is in_unit_of_work
