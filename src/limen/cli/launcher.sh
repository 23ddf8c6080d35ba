#!/bin/sh
# Limen's `limen` command, written from src/limen/cli/launcher.sh by
# `python -m limen.cli.launcher` (scripts/install); limen/cli/launcher.py says why.
#
# `limen ssh [LOGIN@]NODE [COMMAND...]` becomes OpenSSH's ssh here, without Python, when
# the memo of the last hand-over (client/openssh_fast.py) vouches for it. This is a
# second reader of that memo, for the one shape above, and it only ever says yes to less
# than the Python reader does: any doubt (an option, a character outside the plain
# ones, a changed file, the clock) and the words go to Python unchanged, which decides
# as it always has. tests/cli/test_launcher_sh.py holds the two readers to the same
# arguments.
nl='
'
IFS=" 	$nl"
python=@PYTHON@
package_parent=@PACKAGE_PARENT@
memo_format=@MEMO_FORMAT@

in_python() {
    # -P: no current directory on sys.path; -S: site only when the command needs it.
    exec "$python" -P -S -c 'import sys
sys.path.append(sys.argv.pop(1))
sys.argv[0] = "limen"
from limen.cli.launcher import run
sys.exit(run())' "$package_parent" "$@"
}

digits() {  # a non-negative integer, written in decimal digits alone
    case $1 in '' | *[!0-9]*) return 1 ;; esac
}

small() {  # ... and one the shell's arithmetic holds
    digits "$1" && case $1 in ?????????????????*) return 1 ;; esac
}

ssh_from_memo() {  # becomes ssh, or returns for Python to decide
    shift
    target=$1
    shift
    case ${1-} in -*) return ;; esac  # an option after the node: Python parses it
    case ${LIMEN_SSH_CLIENT-} in ?*) return ;; esac
    case $target in
        '' | -* | @* | *@ | *@*@* | *[!a-z0-9._@-]*) return ;;
        *@*) login=${target%@*} node=${target#*@} ;;
        *) login= node=$target ;;
    esac
    case :${PATH-}: in *::* | *:[!/]*) return ;; esac  # ssh found only where Python would
    command -v ssh >/dev/null 2>&1 || return

    home=${LIMEN_HOME-}
    if [ -z "$home" ]; then
        [ -n "${HOME-}" ] || return
        home=$HOME/.limen
    fi
    case $home in /*) ;; *) return ;; esac
    case $home/ in //* | *//* | */./*) return ;; esac  # not as Python spells it

    { IFS= read -r proxy && ! IFS= read -r more && [ -z "$more" ]; } \
        2>/dev/null <"$home/current-profile" || return
    case $proxy in '' | *[!A-Za-z0-9._:-]*) return ;; esac
    dir= rest=$proxy  # client/profile.py's directory name: ":" becomes "_"
    while :; do
        case $rest in
            *:*) dir=$dir${rest%%:*}_ rest=${rest#*:} ;;
            *) dir=$dir$rest; break ;;
        esac
    done

    format= memo_home= memo_proxy= cluster= memo_login= config= valid=
    principals=$nl files= expected= newest=0
    while IFS= read -r line; do
        case $line in *[!\ -~]*) return ;; esac  # printable ASCII only
        key=${line%% *}
        value=${line#"$key"}
        value=${value# }
        case $key in
            format) format=$value ;;
            home) memo_home=$value ;;
            proxy) memo_proxy=$value ;;
            cluster) cluster=$value ;;
            login) memo_login=$value ;;
            config) config=$value ;;
            valid) valid=$value ;;
            principal) principals=$principals$value$nl ;;
            file)
                case $value in *' '*' '*' '?*) ;; *) return ;; esac
                inode=${value%% *} rest=${value#* }
                size=${rest%% *} rest=${rest#* }
                mtime=${rest%% *} path=${rest#* }
                digits "$inode" && digits "$size" && digits "$mtime" || return
                seconds=${mtime%?????????}
                small "$seconds" || return
                [ "$seconds" -le "$newest" ] || newest=$seconds
                files=$files$path$nl
                expected=$expected$inode' '$size' '$seconds.${mtime#"$seconds"}$nl
                ;;
        esac
    done 2>/dev/null <"$home/keys/$dir/openssh_handover" || return
    [ -z "$line" ] || return  # a last line without its newline: not as Python wrote it
    [ "$format" = "$memo_format" ] && [ "$memo_home" = "$home" ] || return
    [ "$memo_proxy" = "$proxy" ] && [ -n "$memo_login" ] && [ -n "$config" ] || return
    case $cluster in '' | *[!a-z0-9._-]*) return ;; esac
    [ -n "$files" ] || return

    # The files the memo names, still the ones it saw (inode, size, mtime to the
    # nanosecond), and the clock, in one stat: /proc/self/ is the stat process's own
    # directory, which the kernel makes when stat looks it up, so its mtime is now.
    # (`date` would be a second process: a millisecond more of every `limen ssh`.)
    IFS=$nl
    set -f
    seen=$(LC_ALL=C stat -L -c '%i %s %.9Y' -- $files /proc/self/ 2>/dev/null) || return
    IFS=" 	$nl"
    set +f
    now=${seen##*"$nl"} seen=${seen%"$nl"*}
    now=${now##* } && now=${now%.*} && small "$now" || return
    [ "$now" -ge "$newest" ] || return  # a clock behind the files': not one to trust
    [ "$seen$nl" = "$expected" ] || return
    valid_after=${valid%% *} valid_before=${valid#* }
    small "$valid_after" && small "$valid_before" || return
    [ "$valid_after" -le "$now" ] && [ "$now" -lt "$valid_before" ] || return

    if [ -z "$login" ]; then  # ssh's default: the local user when allowed, else the first
        login=${LOGNAME:-${USER:-${LNAME:-${USERNAME-}}}}
        [ -n "$login" ] || return
        case $principals in
            *"$nl$login$nl"*) ;;
            "$nl") ;;
            *) login=${principals#"$nl"} login=${login%%"$nl"*} ;;
        esac
    fi
    case $principals in *"$nl$login$nl"*) ;; *) return ;; esac
    [ "$login" = "$memo_login" ] || return

    case $node in
        *".$cluster") exec ssh -F "$config" -l "$login" -- "$node" "$@" ;;
        *) exec ssh -F "$config" -l "$login" -o "HostName=$node" -- "$node.$cluster" "$@" ;;
    esac
}

case $# in 0 | 1) ;; *) [ "$1" = ssh ] && ssh_from_memo "$@" ;; esac
in_python "$@"
