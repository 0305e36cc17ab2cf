"""`python -m explorer` (`make explore`): serve the explorer on 127.0.0.1 and print its address."""

from __future__ import annotations

import argparse
import logging
import socket

import torch
import uvicorn

from explorer.app import POOL_SIZE, Explorer, create_app
from explorer.catalog import COMPARISON_MODEL, DEFAULT_MODEL, Catalog, ModelNotFoundError
from explorer.digits import SOURCES, load_test_digits

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m explorer", description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"the model shown first: an MLflow run name or id, or a models:/ URI (default {DEFAULT_MODEL})")
    parser.add_argument("--compare", default=COMPARISON_MODEL,
                        help=f"the model the page can show beside it (default {COMPARISON_MODEL})")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--digits", choices=SOURCES, default="auto",
                        help="test digits: auto (the stored mnist asset, else as the asset loads them) or sample")
    parser.add_argument("--pool", type=int, default=POOL_SIZE,
                        help=f"test digits searched for neighbours and top activations (default {POOL_SIZE})")
    return parser.parse_args(argv)


def warm_up(explorer: Explorer, ref: str) -> None:
    """Load the first model and its searched features now, so the first drawing answers at once."""
    try:
        loaded, inspector = explorer.inspector(ref)
    except ModelNotFoundError as error:
        print(f"note: {error}")
        return
    inspector.pool_features("pixels")
    print(f"model {loaded.label}: {loaded.source}")


def main(argv=None) -> None:
    args = parse_args(argv)
    # One intra-op thread: a request pushes one 28x28 digit through a tiny net, where splitting
    # small ops across threads costs more than it gains (see conv_core.gradients.one_thread).
    torch.set_num_threads(1)
    digits = load_test_digits(args.digits)
    explorer = Explorer(Catalog(), digits, args.model, args.compare, pool_size=args.pool)
    print(f"test digits: {digits.description}")
    warm_up(explorer, args.model)
    port = args.port or free_port()
    print(f"convlab explorer on http://{HOST}:{port}/  (Ctrl-C stops it)", flush=True)
    logging.getLogger("uvicorn.access").disabled = True  # a line per drawing update would drown the terminal
    uvicorn.run(create_app(explorer), host=HOST, port=port, log_level="warning")


if __name__ == "__main__":
    main()
