"""Cross-dialect translation through one internal representation (`ir`), with no I/O.

Each family module (`openai_chat`, `anthropic`, `responses`, `gemini`) offers
`parse_request(body) -> ir.ChatRequest`, `render_request(ir) -> body`,
`parse_response(body) -> ir.ChatResponse` and `render_response(ir) -> body`; its `<family>_stream`
module a `StreamDecoder` (`feed(SSEEvent) -> list[ir.StreamEvent]`, `close()` at the end of the
upstream body, and `usage` so far) and a `StreamEncoder` (`feed(ir.StreamEvent) -> bytes`).
"""
