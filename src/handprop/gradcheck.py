"""``handprop.gradcheck``, the documented import of the gradient check; it lives in
``handprop.teach.gradcheck``."""

from .teach.gradcheck import (CONV_INPUT_SHAPE, DEFAULT_ACTIVATIONS, REL_ERROR_FLOOR, GradcheckReport,
                              SanityResult, TensorCheck, default_conv_network,
                              default_network, default_problem, gradcheck, overfit_check,
                              rel_error, total_loss)

__all__ = ["CONV_INPUT_SHAPE", "DEFAULT_ACTIVATIONS", "REL_ERROR_FLOOR", "GradcheckReport",
           "SanityResult", "TensorCheck", "default_conv_network", "default_network",
           "default_problem", "gradcheck", "overfit_check", "rel_error", "total_loss"]
