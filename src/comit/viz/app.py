"""``comit serve``: the local web app, laid out with Gradio.

Why Gradio: it is the well-kept standard for model demos (regular releases, large user base), it
gives uploads with a server-side size limit, image outputs with click coordinates and error
pop-ups out of the box, and it is one optional dependency (the ``app`` extra) instead of a web
stack of our own. Everything the app computes lives in explorer.py; this file only lays it out.

Privacy: analytics are switched off (environment and ``analytics_enabled=False``), the theme
uses the system's fonts (the default theme would fetch Google Fonts), no share link, no MCP
server, and the server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: it reads this at import
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from .explorer import MB, ORDERS, Explorer, UserError  # noqa: E402

TITLE = "COMiT: what the message knows, crop by crop"
INTRO = ("Upload an image (or pick a sample). The model looks at it one crop at a time and rewrites its message "
         "of discrete tokens after each look. You see the crops it chose, what the message could paint after "
         "each crop (one flow step: sharp where it has looked), the full reconstruction, and where each token "
         "looks.")


def build(explorer: Explorer) -> gr.Blocks:
    with gr.Blocks(title="COMiT", analytics_enabled=False) as page:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        trace = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                inputs, run, note = _settings(explorer)
            with gr.Column(scale=3):
                outputs, token = _results()

        def on_run(*values):
            try:
                result = explorer.run(*values)
            except UserError as error:
                # Say what was wrong where the results appear, and keep the last good pictures.
                gr.Warning(str(error))
                return (*[gr.skip()] * 7, f"**Not run:** {error}")
            return (result.trace, result.crop_path, result.reconstruction, result.one_step, result.token_ids,
                    result.token, result.attention, result.note)

        def on_grid_click(current, event: gr.SelectData):
            if current is None:
                return gr.skip()
            position = explorer.token_at(current, event.index[0], event.index[1])
            return gr.skip() if position is None else position

        def on_token(current, position):
            if current is None or position is None:
                return gr.skip(), gr.skip()
            try:
                return explorer.attention(current, position), explorer.token_ids(current, position)
            except UserError as error:
                raise gr.Error(str(error)) from None

        crop_path, reconstruction, one_step, token_ids, attention = outputs
        run.click(on_run, inputs, [trace, crop_path, reconstruction, one_step, token_ids, token, attention, note],
                  concurrency_limit=1)
        token_ids.select(on_grid_click, [trace], [token])
        token.change(on_token, [trace, token], [attention, token_ids])
    return page


def _settings(explorer: Explorer) -> tuple[list, gr.Button, gr.Markdown]:
    """The input column: the components in the order ``Explorer.run`` takes them, the button, the note."""
    samples = list(explorer.samples())
    inputs = [
        gr.File(label=f"Image (at most {explorer.max_upload_bytes / MB:g} MB)", file_types=["image"],
                type="filepath", elem_id="upload"),
        gr.Dropdown(samples, value=samples[0] if samples else None, label="…or a bundled sample",
                    info="used when no file is uploaded", elem_id="sample"),
        gr.Dropdown(explorer.model_names, value=explorer.model_names[0], label="Model", elem_id="model"),
        gr.Dropdown(list(ORDERS), value=ORDERS[0], label="Crop order", elem_id="order"),
        gr.Slider(1, 10, value=9, step=1, label="Crops to observe", elem_id="num-crops"),
        gr.Checkbox(False, label="Observe the whole image first (global crop)", elem_id="global-crop"),
        gr.Slider(1, 50, value=10, step=1, label="Decoding steps", elem_id="steps"),
        gr.Slider(0, 15, value=7.5, step=0.5, label="Guidance weight", elem_id="cfg"),
        gr.Number(0, precision=0, label="Seed", elem_id="seed"),
    ]
    run = gr.Button("Reconstruct", variant="primary", elem_id="run")
    return inputs, run, gr.Markdown(elem_id="note")


def _results() -> tuple[tuple[gr.Image, ...], gr.Number]:
    """The result column: (crop path, reconstruction, one-step strip, token ids, attention) and the token box."""
    with gr.Row():
        crop_path = result_image("Crop path (numbered in order; arrows: offsets)", "crop-path")
        reconstruction = result_image("Reconstruction", "reconstruction")
    one_step = result_image("What the message knows after each crop (one-step reconstructions)", "one-step")
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Token ids** (one cell per message position): click a token")
            token_ids = result_image("Token ids", "token-ids", show_label=False)
        with gr.Column():
            token = gr.Number(None, precision=0, label="Token position", elem_id="token")
            attention = result_image("Where this token looks", "attention")
    return (crop_path, reconstruction, one_step, token_ids, attention), token


def result_image(label: str, elem_id: str, show_label: bool = True) -> gr.Image:
    # PNG keeps the pixels exact (the default, WebP, would blur the upscaled 64-px images). No share
    # button: it would offer to post the picture to a third-party site.
    return gr.Image(label=label, type="pil", format="png", interactive=False, elem_id=elem_id, show_label=show_label,
                    buttons=["download", "fullscreen"])


def launch(explorer: Explorer, host: str, port: int) -> None:
    """Serve until stopped (Ctrl-C)."""
    page = build(explorer)
    # The system's fonts: the default theme would fetch Google Fonts from the visitor's browser.
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    _, url, _ = page.launch(server_name=host, server_port=port, share=False, max_file_size=explorer.max_upload_bytes,
                            show_error=True, ssr_mode=False, mcp_server=False, pwa=False, footer_links=["settings"],
                            theme=theme, quiet=True, prevent_thread_lock=True)
    print(f"COMiT app on {url} (models: {', '.join(explorer.model_names)}); Ctrl-C stops it", flush=True)
    page.block_thread()
