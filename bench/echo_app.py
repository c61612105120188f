"""The ceiling: a bare Flask app that answers JSON, served with the service's own gunicorn settings.

What the service's endpoints reach as a share of this app's requests/s is
what the benchmark reports: the cost of the service's own work (validation,
tokens, database, Redis) on top of Flask, gunicorn and the machine.
"""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/echo")
def echo_get():
    return jsonify(isSuccess=True, statusCode=200, data={"echo": True}, errors=[])


@app.post("/echo")
def echo_post():
    return jsonify(isSuccess=True, statusCode=200, data=request.get_json(), errors=[])
