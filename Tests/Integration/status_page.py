"""Drives the admin status page in headless Chromium over the DevTools protocol: waits for the page
to load its data, reports what it shows, clicks the first session's close button, and optionally
saves a screenshot. Prints one JSON object.

    python3 status_page.py CHROMIUM URL [SCREENSHOT.png]
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # Debian python3-websocket
import ctypes

# PR_SET_PDEATHSIG (1) with SIGKILL (9), called in the child between fork and exec: what this script
# starts dies with it, even when it is killed. libc is loaded here, not in the child.
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """preexec_fn: SIGKILL when the parent ends, so a killed test leaves nothing running."""
    _LIBC.prctl(1, 9, 0, 0, 0)


chromium, url = sys.argv[1], sys.argv[2]
screenshot = sys.argv[3] if len(sys.argv) > 3 else None
profile = tempfile.mkdtemp(prefix="sallyport-chromium-")


def crash_handlers():
    """PIDs of Chromium's crash handlers: it starts one that outlives the browser."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if b"chrome_crashpad_handler" in open("/proc/%s/cmdline" % entry, "rb").read():
                    pids.add(int(entry))
            except OSError:
                pass
    return pids


handlers_before = crash_handlers()
browser = subprocess.Popen(
    # No crash reporter: its handler would outlive the browser.
    [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-breakpad",
     "--disable-crash-reporter", "--remote-debugging-port=0",
     "--user-data-dir=" + profile, "--window-size=1200,700", "about:blank"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, CHROME_HEADLESS="1"), preexec_fn=die_with_parent)
result = {}
try:
    # Chromium writes the port it took into DevToolsActivePort.
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + 60
    while not os.path.exists(port_file) and time.time() < deadline:
        time.sleep(0.1)
    port = int(open(port_file).read().split()[0])
    request = urllib.request.Request("http://127.0.0.1:%d/json/new?%s" % (port, url), method="PUT")
    target = json.load(urllib.request.urlopen(request, timeout=30))
    ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30)
    next_id = [0]

    def call(method, **params):
        next_id[0] += 1
        ws.send(json.dumps({"id": next_id[0], "method": method, "params": params}))
        while True:
            message = json.loads(ws.recv())
            if message.get("id") == next_id[0]:
                return message.get("result", {})

    def evaluate(expression):
        return call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    deadline = time.time() + 30
    while evaluate("document.body && document.body.dataset.loaded") != "yes" and time.time() < deadline:
        time.sleep(0.2)
    result["loaded"] = evaluate("document.body.dataset.loaded") == "yes"
    result["title"] = evaluate("document.title")
    result["sessions"] = evaluate("[...document.querySelectorAll('#sessions tbody tr')].map(r => r.id)")
    result["counts"] = evaluate("[...document.querySelectorAll('#counts tbody tr')].map(r => r.innerText)")
    result["facts"] = evaluate("document.getElementById('facts').innerText")
    if screenshot:
        data = call("Page.captureScreenshot", format="png").get("data", "")
        with open(screenshot, "wb") as out:
            out.write(base64.b64decode(data))
    result["clicked"] = evaluate("(() => { const b = document.querySelector('button.close'); if (!b) return false; b.click(); return true; })()")
    time.sleep(0.5)
    ws.close()
except Exception as error:  # reported, not raised: the test prints it
    result["error"] = repr(error)
finally:
    browser.kill()
    browser.wait()
    # Stop what this run started: the crash handler it left behind, by its PID.
    for pid in crash_handlers() - handlers_before:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    shutil.rmtree(profile, ignore_errors=True)
print(json.dumps(result))
