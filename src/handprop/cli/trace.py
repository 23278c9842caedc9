"""`handprop trace`: one forward pass, backward pass and SGD step of a small network, in full."""

from __future__ import annotations

import json

from . import add_backend_argument


def register(subparsers):
    p = subparsers.add_parser(
        "trace",
        help="every number of one backprop step of a small network, as tables",
        description="Read NET.json (layers with fan_in x fan_out weights, bias and activation; "
        "loss softmax_cross_entropy or mse; one input; a target class index or vector; "
        "learning_rate), run one forward pass, backward pass and SGD step with the library "
        "in float64, and print every pre-activation, activation, the loss, every delta and "
        "gradient, and the updated weights. See examples/trace_mse_2-2-2.json. Layers with a "
        "'type' (conv, maxpool, avgpool, flatten, dense) take an image input and print every "
        "feature map, delta and gradient map; see examples/trace_conv.json.",
    )
    p.add_argument("net", metavar="NET.json", help="the network, input, target and learning rate")
    p.add_argument("--json", action="store_true",
                   help="print a JSON object (forward, loss, deltas, grads, updated) instead of tables")
    add_backend_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..engines import get_engine
    from ..teach.net_file import load_net
    from ..teach.trace import trace

    net = load_net(args.net)  # validate the file before possibly starting a GPU engine
    result = trace(net, engine=get_engine(args.backend))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.format())
    return 0
