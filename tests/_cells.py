"""The three cells behind one interface (from fastrnn._testing), so each test
family runs for every cell."""
from fastrnn._testing import (CELLS, FINALS, GATES, GRAD_OF, STATES, backward,  # noqa: F401
                              forward, params)
from fastrnn._testing import random_upstream as upstream  # noqa: F401
