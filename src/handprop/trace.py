"""``handprop.trace``, the documented import of the trace tool; it lives in ``handprop.teach``.

    from handprop.trace import load_net, trace
    result = trace(load_net("examples/trace_mse_2-2-2.json"))
    print(result.format())

The NET.json format is described in ``handprop.teach.net_file``.
"""

from .teach.net_file import (ConvNetSpec, LayerSpec, NetSpec, is_conv_net, load_net,
                             parse_conv_net, parse_net)
from .teach.trace import ConvTrace, LayerTrace, Trace, trace
from .teach.trace_format import format_conv_trace, format_trace

__all__ = ["ConvNetSpec", "ConvTrace", "LayerSpec", "LayerTrace", "NetSpec", "Trace",
           "format_conv_trace", "format_trace", "is_conv_net", "load_net", "parse_conv_net",
           "parse_net", "trace"]
