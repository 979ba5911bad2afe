"""User commands: ``users add | list | passwd | delete | apikey`` (the accounts Subsonic apps log in with)."""

from __future__ import annotations

import argparse
import getpass
import sys

from .common import EXIT_OK, CliError, emit, service


def add_commands(sub, common) -> None:
    p = sub.add_parser("users", parents=[common], help="add, list, change and delete the users Subsonic apps log in as",
                       description="The users of the catalog. Subsonic and OpenSubsonic apps (Symfonium, DSub, "
                                   "Feishin, ...) log in to SERVER/rest as one of them; /rest answers nobody until "
                                   "one exists. A password is read from standard input (one line) when it is not a "
                                   "terminal, else prompted for twice. Passwords are stored encrypted with "
                                   "SONICSORT_SECRET_KEY, or the key file SONICSORT_HOME/secret.key (made with "
                                   "mode 0600 on first use).")
    users = p.add_subparsers(dest="users_command", metavar="ACTION")
    users.required = True
    a = users.add_parser("add", parents=[common], help="add a user (password from stdin or a prompt)")
    a.add_argument("name")
    a.add_argument("--admin", action="store_true", help="may manage every user's playlists")
    a.set_defaults(func=cmd_add)
    a = users.add_parser("list", parents=[common], help="list the users")
    a.set_defaults(func=cmd_list)
    a = users.add_parser("passwd", parents=[common], help="set a user's password (from stdin or a prompt)")
    a.add_argument("name")
    a.set_defaults(func=cmd_passwd)
    a = users.add_parser("delete", parents=[common], help="delete a user with their playlists, plays, stars and ratings")
    a.add_argument("name")
    a.set_defaults(func=cmd_delete)
    a = users.add_parser("apikey", parents=[common],
                         help="make a new API key for a user and print it once (OpenSubsonic apiKey login)")
    a.add_argument("name")
    a.set_defaults(func=cmd_apikey)


def _password(prompt_twice: bool = True) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise CliError("no password on standard input (one line)")
        return line.rstrip("\r\n")
    first = getpass.getpass("password: ")
    if prompt_twice and getpass.getpass("again: ") != first:
        raise CliError("the two passwords differ")
    return first


def cmd_add(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings, ready=False)
    svc.users.add(args.name, _password(), admin=args.admin)
    emit(args, {"user": args.name, "admin": args.admin}, f"added user {args.name}" + (" (admin)" if args.admin else ""))
    return EXIT_OK


def cmd_list(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings, ready=False)
    found = svc.catalog.users()
    rows = [{"user": u.name, "admin": u.is_admin, "api_key": u.has_api_key, "created_at": u.created_at} for u in found]
    text = "\n".join(f"{u.name}{'  admin' if u.is_admin else ''}{'  api key' if u.has_api_key else ''}" for u in found)
    emit(args, rows, text or "no users yet: add one with 'sonicsort users add NAME'")
    return EXIT_OK


def cmd_passwd(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings, ready=False)
    svc.catalog.user(args.name)  # an unknown name fails before the prompt
    svc.users.set_password(args.name, _password())
    emit(args, {"user": args.name}, f"changed the password of {args.name}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings, ready=False)
    svc.catalog.delete_user(args.name)
    emit(args, {"user": args.name, "deleted": True}, f"deleted user {args.name}")
    return EXIT_OK


def cmd_apikey(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings, ready=False)
    key = svc.users.new_api_key(args.name)
    emit(args, {"user": args.name, "api_key": key}, key)
    return EXIT_OK
