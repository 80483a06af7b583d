"""What each recurrent cell is, declared once.

Every other part of fastrnn reads this table: the input checks, the one
functional driver, the cache and the gradient tuples, the layers,
``python -m fastrnn``, the test tables, the benchmark suite and setup.py.
It is pure data and imports nothing, so setup.py can read it without
importing fastrnn.  Nothing outside this module (and the reference, which is
written out per cell like the textbook) branches on a cell's name.

An entry says:

``name``
    The cell's one name: the public functions ``{name}_forward`` /
    ``{name}_backward`` (in fastrnn and in fastrnn.reference), the kernel
    modules ``kernels/{name}_numba.py`` and ``kernels/{name}_cython.pyx``,
    ``cache.cell``, test ids and benchmark groups.
``layer``
    The class name of its layer, the same in fastrnn and in ``torch.nn``;
    the one-step module is ``layer + "Cell"``, the gradients ``layer + "Grads"``.
``gates``
    The gate blocks of the stacked weights, in their row order: ``W_ih`` is
    (G*H, I) with G = len(gates), as PyTorch lays them out.
``states``
    The recurrent states, the output h first.  Each state ``s`` is passed in as ``{s}0`` (B, H),
    comes out as ``{s}_n``, takes the upstream gradient ``d_{s}_n`` and gives
    back ``d{s}0``.  Layers carry them as a tuple in this order.  The output
    h (and out, h0, h_n) has P columns and W_hh is (G*H, P): P = H, but in
    a cell with a projection (``proj``).
``options``
    Keyword options of the forward: ``{keyword: (choices, kernel_arg)}``;
    the first choice is the default and the kernels take the index of the
    chosen one as ``kernel_arg`` (0 tanh / 1 relu: the kernels' ``relu`` flag).
    Choices that are True and False make a flag option (checked as one).
``no_low_precision``
    What bfloat16 and int8 compute do not run: option values ``{keyword: value}``,
    and extra weights ``{name: True}`` (refused when given).
``bias_apart``
    Gate blocks of ``b_hh`` that do not fold into the one summed bias
    ``bias = b_ih + b_hh``: the kernels take each as ``b_h{gate}`` (H,) and
    add it where the cell's equations put it (the GRU's b_hn sits inside the
    reset product).
``extras``
    Weights a cell may take besides W_ih, W_hh and the biases, each
    optional: ``{name: (shape, flag)}``.  The forward takes ``name`` as a
    keyword (None: the cell without it); the kernels take the array (zeros
    when it is absent, so their signatures do not change) and ``flag``, 1
    when it is given; the backward's tuple ends with ``d{name}`` (None when
    it was absent), and the cache holds the array only when it was given.
    The LSTM's peepholes (``W_ch``, ONNX's P) are one.  An extra whose
    shape has the letter P is passed, when absent, with no rows there.
``proj``
    The extra weight (P, H) that projects the cell's output, if the cell
    has one: h_t = W_hr (o_t * tanh(c_t)) in the LSTM (PyTorch's
    ``proj_size``).  With it given, h has P columns (any P >= 1) and W_hh
    is (G*H, P); without it P = H.
``saved``
    The forward's outputs that its backward reads (besides the inputs, which
    the cache always keeps: x, the initial states, W_ih, W_hh, the options).
``forward``, ``backward``
    Each kernel's argument list, in order: its one declaration.  The driver
    compiles its call of each kernel from it (fastrnn/_driver.py), and a test
    holds the kernels' signatures to it.  The arguments up to ``num_threads``
    are what the driver has by these names: ``x2d`` (x (T, B, I) viewed as
    (T*B, I)), ``W_ih``, ``W_hh``, ``bias`` (b_ih + b_hh) and ``b_h{gate}``
    for each gate of ``bias_apart``, the initial states (``h0``...),
    ``lengths``, each option's kernel argument, ``use_blas`` and
    ``num_threads``; in the backward also the saved arrays and the upstream
    gradients (``d_out``, ``d_h_n``...).  The arguments after ``num_threads``
    are the buffers the kernel writes, which the driver allocates: their
    shapes are given here (or in ``COMMON_BUFFERS``) in the letters T, B, I,
    H, P (the width of h: see ``states``), GH = G*H, H3 = 3*H, TB = T*B and
    TS, the steps a workspace holds (the backward's
    da: ``_tuning.workspace_steps``; the forward's saved arrays in inference
    are given TS rows by the driver: ``_tuning.kept_steps``).  ``dx2d`` is the
    gradient of x as (T*B, I).
``bias_grads``
    The backward buffers holding the gradients of b_ih and b_hh (one buffer
    twice when they are equal, as in the Elman cell and the LSTM).
"""

# The outputs every cell's kernels write, with the same shapes in every cell.
COMMON_BUFFERS = {
    "forward": {"out": ("T", "B", "P"), "h_n": ("B", "P"), "c_n": ("B", "H")},
    "backward": {"dx2d": ("TB", "I"), "dh0": ("B", "P"), "dc0": ("B", "H"),
                 "dW_ih": ("GH", "I"), "dW_hh": ("GH", "P")},
}

class Kernel:
    """One kernel (``pass_`` "forward" or "backward"): its argument list, the
    buffers among them (those after ``num_threads``) and their shapes, here
    or in that pass's ``COMMON_BUFFERS``."""

    __slots__ = ("args", "buffers", "shapes")

    def __init__(self, pass_, args, shapes):
        self.args = tuple(args.split())
        self.buffers = self.args[self.args.index("num_threads") + 1:]
        shapes = {**COMMON_BUFFERS[pass_], **shapes}
        self.shapes = {name: shapes[name] for name in self.buffers}


class Cell:
    """One cell's entry; see the module docstring for the fields."""

    def __init__(self, *, name, layer, title, gates, states, saved, forward, backward,
                 bias_grads, options=None, no_low_precision=None, bias_apart=(), extras=None,
                 proj=None):
        self.name = name
        self.layer = layer
        self.title = title
        self.gates = gates
        self.G = len(gates)
        self.states = states
        self.options = options or {}
        self.no_low_precision = no_low_precision or {}
        self.bias_apart = bias_apart
        self.extras = extras or {}
        self.proj = proj
        self.saved = saved
        self.forward = forward
        self.backward = backward
        self.bias_grads = bias_grads
        # Names derived from the states, spelled once here.
        self.initial = tuple(s + "0" for s in states)  # ("h0", "c0")
        self.finals = tuple(s + "_n" for s in states)  # ("h_n", "c_n")
        self.upstream = ("d_out",) + tuple("d_" + f for f in self.finals)  # d_out, d_h_n, d_c_n
        # The arrays the forward takes, in order; the backward returns "d" + each.
        self.inputs = (("x",) + self.initial + ("W_ih", "W_hh", "b_ih", "b_hh")
                       + tuple(self.extras))
        self.grads = tuple("d" + name for name in self.inputs)  # dx, dh0, ..., db_hh
        self.state_grads = tuple("d" + s for s in self.initial)  # ("dh0", "dc0")
        self.defaults = {k: choices[0] for k, (choices, _) in self.options.items()}
        # The arrays a training forward's cache holds (besides the lengths): the
        # inputs it owns copies of, then what the forward saved (and each
        # extra weight that was given).
        self.cached = ("x",) + self.initial + ("W_ih", "W_hh") + saved

    def __repr__(self):
        return f"<cell {self.name!r}: {self.title}>"


CELLS = {cell.name: cell for cell in (
    Cell(
        name="rnn", layer="RNN", title="Elman RNN",
        gates=("a",),  # the one pre-activation a_t
        states=("h",),
        options={"nonlinearity": (("tanh", "relu"), "relu")},
        saved=("out",),
        forward=Kernel(
            "forward",
            "x2d W_ih bias W_hh h0 lengths relu bf16 use_blas num_threads  work out h_n",
            {"work": ("B", "GH")}),
        backward=Kernel(
            "backward",
            "x2d W_ih W_hh h0 out d_out d_h_n lengths relu bf16 use_blas num_threads"
            "  da work dx2d dh0 dW_ih dW_hh db",
            {"da": ("TS", "B", "GH"), "work": ("B", "H"), "db": ("GH",)}),
        bias_grads=("db", "db"),
    ),
    Cell(
        name="lstm", layer="LSTM", title="LSTM",
        gates=("i", "f", "g", "o"),
        states=("h", "c"),
        # Peepholes: i and f also see c_{t-1}, o sees c_t, each through a
        # per-unit weight (blocks i, f, o of W_ch).
        # Projection (PyTorch's proj_size): h_t = m_t W_hr^T, m_t = o * tanh(c_t).
        extras={"W_ch": (("H3",), "peephole"), "W_hr": (("P", "H"), "proj")},
        proj="W_hr",
        no_low_precision={"W_hr": True},  # the batch-split kernel: float products only (yet)
        saved=("out", "c", "gates"),
        forward=Kernel(
            "forward",
            "x2d W_ih bias W_hh W_ch W_hr h0 c0 lengths peephole proj bf16 use_blas num_threads"
            "  gates work m c out h_n c_n",
            {"gates": ("T", "B", "GH"), "work": ("B", "GH"), "m": ("B", "H"),
             "c": ("T", "B", "H")}),
        backward=Kernel(
            "backward",
            "x2d W_ih W_hh W_ch W_hr h0 c0 out c gates d_out d_h_n d_c_n lengths peephole proj"
            " bf16 use_blas num_threads  da work m dhp dx2d dh0 dc0 dW_ih dW_hh db dW_ch dW_hr",
            {"da": ("TS", "B", "GH"), "work": ("B", "P"), "m": ("TS", "B", "H"),
             "dhp": ("TS", "B", "P"), "db": ("GH",), "dW_ch": ("H3",), "dW_hr": ("P", "H")}),
        bias_grads=("db", "db"),
    ),
    Cell(
        name="gru", layer="GRU", title="GRU",
        gates=("r", "z", "n"),
        states=("h",),
        # reset_after (Keras's name; ONNX's linear_before_reset=1, PyTorch's
        # only form): n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)).
        # reset_after=False (Keras's reset_after=False, ONNX's default
        # linear_before_reset=0): n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn),
        # a second recurrent product per step, after r.
        options={"reset_after": ((True, False), "reset_before")},
        no_low_precision={"reset_after": False},
        bias_apart=("n",),  # b_hn: inside the reset product, or added after (reset before)
        # hn: h W_hn^T + b_hn, what r multiplies; with the reset before, r * h_{t-1}.
        saved=("out", "gates", "hn"),
        forward=Kernel(
            "forward",
            "x2d W_ih bias b_hn W_hh h0 lengths reset_before bf16 use_blas num_threads"
            "  gates work hn out h_n",
            {"gates": ("T", "B", "GH"), "work": ("B", "GH"), "hn": ("T", "B", "H")}),
        backward=Kernel(
            "backward",
            "x2d W_ih W_hh h0 out gates hn d_out d_h_n lengths reset_before bf16 use_blas"
            " num_threads"
            "  da_x da_h work dx2d dh0 dW_ih dW_hh db_ih db_hh",
            {"da_x": ("TS", "B", "GH"), "da_h": ("TS", "B", "GH"), "work": ("B", "H"),
             "db_ih": ("GH",), "db_hh": ("GH",)}),
        bias_grads=("db_ih", "db_hh"),
    ),
)}
