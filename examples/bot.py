import asyncio
import os

from ocm.client import ChatClient, Message


async def main() -> None:
    server = os.environ.get("OCM_SERVER", "localhost:9001")
    async with await ChatClient.join(server, "lobby", "echobot") as chat:
        async for event in chat:
            if isinstance(event, Message) and event.sender != chat.name:
                await chat.send(f"{event.sender} said: {event.text}")


asyncio.run(main())
