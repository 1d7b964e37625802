import argparse
import asyncio
import os
import signal
import sys

from ocm.client import ChatClient, Message
from ocm.errors import ErrorCode, OCMError, ServerError


async def main(server: str, room: str, name: str) -> None:
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    # kill or docker stop (SIGTERM) ends it as Ctrl-C does: it leaves the room first
    signal.signal(signal.SIGTERM, lambda *_: loop.call_soon_threadsafe(task.cancel))
    try:
        chat = await ChatClient.join(server, room, name)
    except ServerError as error:
        if error.code != ErrorCode.NO_SUCH_ROOM:
            raise
        chat = await ChatClient.create(server, room, name)  # no such room: host it
    async with chat:  # leaves the room on the way out (for a host: closes it)
        async for event in chat:  # people only: names ending in "bot" (ours too) are bots
            if isinstance(event, Message) and not event.sender.lower().endswith("bot"):
                await chat.send(chat.fit(f"{event.sender} said: {event.text}"))  # cut to fit


parser = argparse.ArgumentParser(description="Answer every message from a person.")
parser.add_argument("--server", default=os.environ.get("OCM_SERVER", "localhost:9001"))
parser.add_argument("--room", default="lobby")
parser.add_argument("--name", default="echobot")
args = parser.parse_args()
try:
    asyncio.run(main(args.server, args.room, args.name))
except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C or SIGTERM: it has left
    pass
except (OCMError, ValueError) as error:  # server unreachable, name taken, bad --server
    sys.exit(f"{args.name}: {error}")
