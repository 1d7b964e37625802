import asyncio
import os

from ocm.client import ChatClient, Message


async def main() -> None:
    server = os.environ.get("OCM_SERVER", "localhost:9001")
    async with await ChatClient.join(server, "lobby", "echobot") as chat:
        async for event in chat:  # people only: names ending in "bot" (ours too) are bots
            if isinstance(event, Message) and not event.sender.lower().endswith("bot"):
                await chat.send(chat.fit(f"{event.sender} said: {event.text}"))  # cut to fit


asyncio.run(main())
