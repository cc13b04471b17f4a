"""`distinfer chat`: a Gradio chat page beside the app, talking to it only through its OpenAI API.

Why its own small process and not a route of the Serve app: Gradio's queue keeps each session's
state in the process that took the `/queue/join` request, and its answer streams back on a second
request (`/queue/data`); the Serve ingress can run several replicas behind Ray Serve's proxy with
no session affinity, so the two halves may land on different replicas. Tried for real: a Gradio
page mounted (`gr.mount_gradio_app`) on a Serve ingress on a local Ray, asked six times from
headless Chromium through the proxy, answered 6 of 6 with one ingress replica and 1 of 6 with two
(the others died mid-stream in the replica: "response already started"). A separate process also
keeps Gradio (and pandas, which it needs) out of the measured serving path and out of the pods'
images, and makes the page an ordinary client of the API, as a person's own code would be.

Where it runs: on the local platform the ray_local role starts it on the head
(roles/ray_local/tasks/chat.yml); on Kubernetes the ray_service role runs it as a Deployment beside
the RayService (roles/ray_service/tasks/chat.yml); `make demo` prints its URL.

- `client`: `/v1/models` and streamed `/v1/chat/completions` over httpx; failures as sentences.
- `page`: the Gradio Blocks (model picker, chat, temperature, max tokens, notice line).
- `server`: the page mounted on a small FastAPI app with `/health`, run by uvicorn.
- `cli`: `distinfer chat --url URL [--host H] [--port P] [--api-key-file F]`.
"""
