"""Run ComfyUI graphs headless: start a ComfyUI server process, post graphs, collect outputs.

Used by the pack's main-job command (`python -m faceclip_headless`) and by its end-to-end tests, so that both
drive ComfyUI the same way. Talks to ComfyUI only over HTTP and its websocket; never imports ComfyUI.
"""
