"""The ``openai`` backend against a TEST DOUBLE: a tiny local HTTP server on 127.0.0.1 that speaks
the OpenAI chat-completions protocol (it is not a model; it echoes what it was sent). Covers the
request format, LlavaGuard JSON, retries, timeouts and malformed replies."""

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from safeview.errors import ModelError
from safeview.rationale import rationale
from safeview.rationale.openai_compat import chat

IMAGE = np.full((24, 32, 3), (200, 10, 10), np.uint8)
CONTROL = {"sexual": 0.05, "cyberbullying": 0.95, "self_harm": 0.1}


class FakeChatServer(ThreadingHTTPServer):
    """Test double: replies from ``self.script`` (a list of (status, body | None=hang)) in order."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.script, self.requests = [], []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        status, reply = self.server.script.pop(0) if self.server.script else (200, None)
        if reply is None:  # hang past the client's timeout
            threading.Event().wait(1.5)
            reply = ""
        data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


def completion(text):
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.fixture
def server():
    srv = FakeChatServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_sends_image_and_conditioned_prompt(server):
    server.script = [(200, completion("A hand making a rude gesture."))]
    r = rationale(IMAGE, CONTROL, {}, backend="openai", base_url=server.url, model="vlm-x", api_key="k1")
    assert r.text == "A hand making a rude gesture." and r.backend == "openai"
    sent = server.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer k1" and sent["body"]["model"] == "vlm-x"
    text_part, image_part = sent["body"]["messages"][0]["content"]
    assert text_part["text"] == r.prompt and "cyberbullying" in r.prompt and "gestures" in r.prompt
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert np.array_equal(decoded, IMAGE)


def test_llavaguard_json(server):
    reply = {"rating": "Unsafe", "category": "O1: Hate, Humiliation, Harassment", "rationale": "An offensive gesture."}
    server.script = [(200, completion(json.dumps(reply)))]
    r = rationale(IMAGE, CONTROL, {}, backend="openai", base_url=server.url, model="m", json_output=True)
    assert r.text == "An offensive gesture." and r.evidence["llavaguard"] == reply
    assert server.requests[0]["body"]["response_format"] == {"type": "json_object"}
    server.script = [(200, completion("not json at all"))]
    with pytest.raises(ModelError, match="LlavaGuard JSON"):
        chat(IMAGE, "q", base_url=server.url, model="m", json_output=True)


def test_retries_server_errors_then_succeeds(server):
    server.script = [(503, {"error": "busy"}), (200, completion("ok"))]
    assert chat(IMAGE, "q", base_url=server.url, model="m", retries=1, backoff=0.01)["text"] == "ok"
    assert len(server.requests) == 2


def test_client_error_is_not_retried(server):
    server.script = [(401, {"error": "bad key"}), (200, completion("never"))]
    with pytest.raises(ModelError, match="HTTP 401"):
        chat(IMAGE, "q", base_url=server.url, model="m", retries=3, backoff=0.01)
    assert len(server.requests) == 1


def test_timeout_is_reported_after_retries(server):
    server.script = [(200, None), (200, None)]
    with pytest.raises(ModelError, match=r"no reply within 0.3 s.*after 2 attempts"):
        chat(IMAGE, "q", base_url=server.url, model="m", timeout=0.3, retries=1, backoff=0.01)


@pytest.mark.parametrize("reply", ["<html>oops</html>", {"choices": []}, {"choices": [{"message": {"content": None}}]}])
def test_malformed_reply(server, reply):
    server.script = [(200, reply)]
    with pytest.raises(ModelError, match="did not return a chat completion"):
        chat(IMAGE, "q", base_url=server.url, model="m", retries=0)


def test_unreachable_endpoint():
    with pytest.raises(ModelError, match="cannot connect"):
        chat(IMAGE, "q", base_url="http://127.0.0.1:9/v1", model="m", retries=0)


def test_llm_judge_scores_the_evaluation(server):
    from safeview.rationale.evaluate import evaluate, summarise

    server.script = [(200, completion("1"))] * 2 + [(200, completion("0"))] * 9
    items = [{"image": IMAGE, "name": "a.png", "category": "cyberbullying", "control": CONTROL}]
    rows = evaluate(items, [{"backend": "evidence"}], judge={"base_url": server.url, "model": "judge"})
    assert [r["judge"] for r in rows] == [1, 1] + [0] * 9
    assert summarise(rows, score="judge") == {("evidence", "", "coarse"): 1.0, ("evidence", "", "fine"): 0.0}
    sent = server.requests[0]["body"]["messages"][0]["content"]
    assert len(sent) == 1 and "cyberbullying" in sent[0]["text"] and "Answer:" in sent[0]["text"]  # text only, no image
    server.script = [(200, completion("maybe"))]
    with pytest.raises(ModelError, match="instead of 0 or 1"):
        evaluate(items, [{"backend": "evidence"}], judge={"base_url": server.url, "model": "judge"})
