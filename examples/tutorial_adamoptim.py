"""The PyTorch tutorial's hand-written AdamOptim (../shared/seeds), wrapped for ``adamspec check``.

    adamspec check examples/tutorial_adamoptim.py:TutorialAdam --variant paper.algorithm1

The tutorial's class keeps m and v for a weight ``w`` and a bias ``b`` and takes the step
count from its caller; the wrapper below is adamspec's stateful-object kernel form.
"""

from adamspec.impl.adapters.kernel_protocol import KernelState
from adamspec.impl.adapters.seed_tutorial import AdamOptim  # the tutorial's code, verbatim


class TutorialAdam:
    def __init__(self, h):  # h: KernelHyper (floats)
        self.opt, self.t = AdamOptim(h.lr, h.beta1, h.beta2, h.eps), 0

    def step(self, params, grads):
        self.t += 1
        return list(self.opt.updates(self.t, *params, *grads))

    def get_state(self):
        o = self.opt
        return KernelState([o.m_dw, o.m_db], [o.v_dw, o.v_db], None, self.t)

    def set_state(self, s):
        if len(s.m) != 2:
            raise NotImplementedError("the tutorial updates exactly two tensors (w, b)")
        (self.opt.m_dw, self.opt.m_db), (self.opt.v_dw, self.opt.v_db), self.t = s.m, s.v, s.step
