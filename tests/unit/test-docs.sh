#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The documentation cannot drift from the code:
#  (a) every man page (docs/man/*.scd) renders with scdoc, and groff (and man-db, when
#      installed) report no warning for it at 80 columns;
#  (b) every configuration key (include/config.h's header comment and daemon/config.c's
#      key table) is documented in lagoon-taskd.conf(5) under its section, with the
#      default the code applies; every option and command of lagoon-taskctl (its option
#      tables and usage text) is in lagoon-taskctl(1) and in the bash completion; every
#      option of lagoon-taskd is in lagoon-taskd(8);
#  (c) the bash completion, sourced in a clean "bash -c", registers itself and offers
#      the commands, the options of each command, task ids and option values (from a
#      stub lagoon-taskctl), and stays quiet when lagoon-taskd cannot be reached (with
#      the real lagoon-taskctl when $TASKCTL names it);
#  (d) lagoon-taskd(8) gives the unit's journald rate limit as the unit sets it, and no
#      page shows a command with sudo.
# Exits 0 when everything checked passed, 1 on a failure, 77 when a tool was missing
# (after running every part that could run).
#
# Environment: TEST_SRCDIR (the source tree; default: this file's ../..), TASKCTL (a
# built lagoon-taskctl, optional).
set -uo pipefail

SRCDIR=${TEST_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
MANDIR=$SRCDIR/docs/man
COMPLETION=$SRCDIR/shell-completion/bash/lagoon-taskctl
CONFIG_H=$SRCDIR/daemon/core/config.h
CONFIG_C=$SRCDIR/daemon/core/config.c
TASKCTL_C=$SRCDIR/daemon/ctl/taskctl.c
MAIN_C=$SRCDIR/daemon/main.c
PAGES=(lagoon-taskctl.1 lagoon-taskd.conf.5 lagoon-taskd.8)

failures=0
skipped=0
checks=0

fail() {
        echo "FAIL: $*" >&2
        failures=$((failures + 1))
}
ok() {
        checks=$((checks + 1))
}
skip() {
        echo "SKIP: $*" >&2
        skipped=$((skipped + 1))
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/test-docs.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

for f in "$CONFIG_H" "$CONFIG_C" "$TASKCTL_C" "$MAIN_C" "$COMPLETION" "${PAGES[@]/#/$MANDIR/}"; do
        [[ $f == "$MANDIR"/* ]] && f=$f.scd
        if [[ ! -f $f ]]; then
                echo "FAIL: missing $f" >&2
                exit 1
        fi
done

# ---- (a) rendering ---------------------------------------------------------------------

if ! command -v scdoc >/dev/null 2>&1; then
        skip "scdoc not installed: man pages not rendered"
else
        for page in "${PAGES[@]}"; do
                src=$MANDIR/$page.scd
                out=$TMP/$page
                # The build substitutes @VERSION@ (docs/meson.build); so do we.
                if ! sed 's/@VERSION@/0.0-test/g' "$src" | scdoc >"$out" 2>"$TMP/scdoc.err"; then
                        fail "scdoc $page.scd: $(cat "$TMP/scdoc.err")"
                        continue
                fi
                [[ -s $TMP/scdoc.err ]] && fail "scdoc $page.scd printed: $(cat "$TMP/scdoc.err")"
                grep -q '@[A-Z_]*@' "$out" && fail "$page: unsubstituted @...@ left"
                head -c 4 "$out" | grep -q . || fail "$page: empty output"
                ok

                if command -v groff >/dev/null 2>&1; then
                        # -k: preconv (UTF-8 input, as man does); -t: tbl for tables.
                        w=$(groff -k -t -wall -z -man -rLL=80n "$out" 2>&1 >/dev/null)
                        if [[ -n $w ]]; then
                                fail "groff warnings for $page:"$'\n'"$w"
                        else
                                ok
                        fi
                else
                        skip "groff not installed: $page not checked with groff"
                fi

                if command -v man >/dev/null 2>&1; then
                        w=$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings=all -l "$out" 2>&1 >/dev/null)
                        if [[ -n $w ]]; then
                                fail "man --warnings for $page:"$'\n'"$w"
                        else
                                ok
                        fi
                        # Every section a reference page needs.
                        text=$(MANWIDTH=80 LC_ALL=C.UTF-8 man -l "$out" 2>/dev/null)
                        for s in NAME SYNOPSIS DESCRIPTION "SEE ALSO"; do
                                grep -q "^$s\$" <<<"$text" || fail "$page: no $s section"
                        done
                        ok
                else
                        skip "man not installed: $page not checked with man --warnings"
                fi
        done
fi

# ---- (b) the docs against the code ------------------------------------------------------

conf_page=$MANDIR/lagoon-taskd.conf.5.scd
ctl_page=$MANDIR/lagoon-taskctl.1.scd
daemon_page=$MANDIR/lagoon-taskd.8.scd

# The keys of config.h's header comment: "Key=" words up to the end of that comment.
mapfile -t header_keys < <(perl -0777 -ne 'for my $c (m{/\*.*?\*/}sg) { next unless $c =~ /\[Daemon\]/; print "$_\n" for $c =~ /\b([A-Z][A-Za-z]*)=/g; last }' "$CONFIG_H" | sort -u)
if ((${#header_keys[@]} < 40)); then
        fail "found only ${#header_keys[@]} keys in config.h's header comment: the test's parser is out of date"
fi

# The key table of config.c: section, key, default ("NULL" when none).
mapfile -t table < <(perl -0777 -ne 'while (/\{\s*SECTION_([A-Z]+)\s*,\s*"([A-Za-z]+)"\s*,\s*\w+\s*,\s*(?:offsetof\([^)]*\)|0)\s*,\s*("[^"]*"|NULL)/g) { my ($s, $k, $d) = ($1, $2, $3); $d =~ s/^"|"$//g; print "$s $k $d\n" }' "$CONFIG_C")
if ((${#table[@]} < 40)); then
        fail "found only ${#table[@]} entries in config.c's key table: the test's parser is out of date"
fi

# The page's definition blocks: a line starting with '*' and the tab-indented lines
# below it (scdoc's definition lists), one block per line of $TMP/blocks ("HEADER<TAB>BODY"), each with the
# section heading it is under.
perl -ne '
        chomp;
        if (/^# (.*)$/) { flush(); $sec = $1; next }
        if (/^\*/) { flush(); $head = $_; $body = ""; next }
        if (/^\t/ && defined $head) { s/^\t+//; $body .= " $_"; next }
        next if /^$/;
        flush();
        # A paragraph line that merely starts with "*" has no indented body.
        sub flush { print "$sec\t$head\t$body\n" if defined $head && $body =~ /\S/; undef $head }
        END { flush() }' "$conf_page" >"$TMP/blocks"

section_heading() {
        case $1 in
        DAEMON) echo "[Daemon] SECTION OPTIONS" ;;
        RUNTIME) echo "[Runtime] SECTION OPTIONS" ;;
        TASKS) echo "[Tasks] SECTION OPTIONS" ;;
        LAGOON) echo "[Lagoon] SECTION OPTIONS" ;;
        KUBERNETES) echo "[Kubernetes] SECTION OPTIONS" ;;
        SERVICE) echo "[Service NAME] SECTION OPTIONS" ;;
        *) echo "?" ;;
        esac
}

for k in "${header_keys[@]}"; do
        if grep -qF "*$k=*" "$conf_page"; then ok; else fail "lagoon-taskd.conf(5) does not document $k= (config.h)"; fi
done

for entry in "${table[@]}"; do
        read -r sec key def <<<"$entry"
        heading=$(section_heading "$sec")
        block=$(awk -F'\t' -v h="$heading" -v k="*$key=*" '$1 == h && index($2, k) { print $3; exit }' "$TMP/blocks")
        if [[ -z $block ]]; then
                fail "lagoon-taskd.conf(5) has no entry for $key= under \"$heading\" (config.c)"
                continue
        fi
        if [[ $def != NULL ]]; then
                # "Default: ... *6h*" or "_/var/lib/lagoon-taskd_": the code's default, marked up.
                rest=${block#*Default:}
                if [[ $rest == "$block" ]]; then
                        fail "$key=: no \"Default:\" in lagoon-taskd.conf(5) (the code's is '$def')"
                elif [[ $rest != *"*$def*"* && $rest != *"_${def}_"* ]]; then
                        fail "$key=: lagoon-taskd.conf(5) does not give the code's default '$def'"
                else
                        ok
                fi
        else
                ok
        fi
done
# Sections: every one of the code's is a heading of the page.
for s in Daemon Runtime Tasks Lagoon Kubernetes "Service NAME" "Image REFERENCE"; do
        grep -qF "# [$s] SECTION OPTIONS" "$conf_page" || fail "lagoon-taskd.conf(5) has no [$s] section"
done
ok

# lagoon-taskctl: long options of every option table and of the usage text, short
# options of the getopt strings, the commands of the verb table.
mapfile -t ctl_long < <({
        perl -ne 'print "$1\n" while /\{\s*"([a-z][a-z-]*)"\s*,\s*(?:no|required|optional)_argument/g' "$TASKCTL_C"
        perl -0777 -ne 'if (/static void help\(void\)\s*\{(.*?)\n\}/s) { my $h = $1; print "$1\n" while $h =~ /(?<![\w-])--([a-z][a-z-]+)/g }' "$TASKCTL_C"
} | sort -u)
mapfile -t ctl_short < <(perl -ne 'print "$_\n" for map { split //, $_ } /(?:getopt_long\([^,]+,\s*[^,]+,\s*|\.short_options\s*=\s*)"\+?([A-Za-z:]*)"/g' "$TASKCTL_C" | tr -d ':' | grep . | sort -u)
# Each verb's row starts with its name and, for an alias, the alias.
mapfile -t ctl_verbs < <(perl -0777 -ne 'if (/\bverbs\[\]\s*=\s*\{(.*?)\};/s) { my $t = $1; while ($t =~ /\{\s*"([a-z]+)"\s*,(?:\s*"([a-z]+)"\s*,)?/g) { print "$1\n"; print "$2\n" if defined $2 } }' "$TASKCTL_C")
((${#ctl_long[@]} >= 10)) || fail "found only ${#ctl_long[@]} long options in taskctl.c: the test's parser is out of date"
((${#ctl_verbs[@]} >= 7)) || fail "found only ${#ctl_verbs[@]} commands in taskctl.c: the test's parser is out of date"
ctl_verbs+=(help) # handled before the verb table

for o in "${ctl_long[@]}"; do
        if grep -qF -- "*--$o*" "$ctl_page"; then ok; else fail "lagoon-taskctl(1) does not document --$o"; fi
        if grep -qE -- "(^|[ \"(])--$o(=|[ \")]|\$)" "$COMPLETION"; then ok; else fail "the bash completion does not offer --$o"; fi
done
for o in "${ctl_short[@]}"; do
        if grep -qF -- "*-$o*" "$ctl_page"; then ok; else fail "lagoon-taskctl(1) does not document -$o"; fi
        if grep -qE -- "[ \"]-${o}[ \"]" "$COMPLETION"; then ok; else fail "the bash completion does not offer -$o"; fi
done
for v in "${ctl_verbs[@]}"; do
        if grep -qE -- "^\\*$v\\*|^\\*[a-z]+\\*, \\*$v\\*" "$ctl_page"; then ok; else fail "lagoon-taskctl(1) does not document the command $v"; fi
        if grep -qE -- "^[[:space:]]*local verbs=\".*\\b$v\\b" "$COMPLETION"; then ok; else fail "the bash completion does not offer the command $v"; fi
done

# lagoon-taskd: its long options (table and help text) and short options.
mapfile -t daemon_long < <({
        perl -ne 'print "$1\n" while /\{\s*"([a-z][a-z-]*)"\s*,\s*(?:no|required|optional)_argument/g' "$MAIN_C"
        perl -0777 -ne 'if (/static void help\(void\)\s*\{(.*?)\n\}/s) { my $h = $1; print "$1\n" while $h =~ /(?<![\w-])--([a-z][a-z-]+)/g }' "$MAIN_C"
} | sort -u)
((${#daemon_long[@]} >= 4)) || fail "found only ${#daemon_long[@]} options in main.c: the test's parser is out of date"
for o in "${daemon_long[@]}"; do
        if grep -qF -- "*--$o*" "$daemon_page"; then ok; else fail "lagoon-taskd(8) does not document --$o"; fi
done
for o in $(perl -ne 'print "$1\n" if /getopt_long\([^,]+,\s*[^,]+,\s*"\+?([A-Za-z:]*)"/' "$MAIN_C" | tr -d ':' | fold -w1); do
        if grep -qF -- "*-$o*" "$daemon_page"; then ok; else fail "lagoon-taskd(8) does not document -$o"; fi
done
# The journal commands users need.
for s in "journalctl LAGOON_TASK_ID=" "journalctl -u lagoon-taskd"; do
        if grep -qF -- "$s" "$daemon_page"; then ok; else fail "lagoon-taskd(8) does not show '$s'"; fi
done

# ---- (c) the bash completion ------------------------------------------------------------

# A stub lagoon-taskctl: answers "ls --json" with three tasks and logs its arguments.
# The third task's command holds text that looks like members: it must not leak.
mkdir -p "$TMP/bin" "$TMP/badbin"
cat >"$TMP/bin/lagoon-taskctl" <<'EOF'
#!/bin/sh
echo "$*" >>"$STUB_LOG"
case "$*" in
*"ls --json"*)
        printf '%s\n' '{"tasks":[{"id":"task-aaa","name":"task-aaa","project":"proj1","environment":"main","namespace":"proj1-main","service":"cli","command":"drush cr","status":"complete","exitCode":0,"createdAt":"2026-11-28T01:00:00.000000Z","timeout":21600},{"id":"task-bbb","name":"b","project":"proj2","environment":"dev","namespace":"proj2-dev","service":"nginx","command":"sleep 100","status":"running","createdAt":"2026-11-28T01:00:01.000000Z","timeout":21600}, {"id": "task-ccc", "name": "c", "project": "proj1", "environment": "main", "namespace": "proj1-main", "service": "cli", "command": "echo \",\"id\":\"evil\", {\"service\":\"evil\"}", "status": "pending", "queuePosition": 1, "createdAt": "2026-11-28T01:00:02.000000Z", "timeout": 21600}]}'
        ;;
*) exit 1 ;;
esac
EOF
# A stub that fails loudly, as lagoon-taskctl does when the daemon is down.
cat >"$TMP/badbin/lagoon-taskctl" <<'EOF'
#!/bin/sh
echo "lagoon-taskctl: cannot connect to lagoon-taskd at /run/lagoon-taskd/api.sock: No such file or directory" >&2
exit 1
EOF
chmod +x "$TMP/bin/lagoon-taskctl" "$TMP/badbin/lagoon-taskctl"

# complete_line PATHDIR BREAKS WORD... : runs the completion for the words (the last is
# the one under the cursor) in a clean bash; COMPREPLY on stdout, one per line, and the
# shell's stderr in $TMP/complete.err. BREAKS "=" keeps '=' in COMP_WORDBREAKS (bash's
# default, which splits "--opt=value" into three words; the caller passes them so).
complete_line() {
        local pathdir=$1 breaks=$2
        shift 2
        STUB_LOG=$TMP/stub.log PATH="$pathdir:/usr/bin:/bin" LAGOON_TASKD_SOCKET='' \
                bash --norc --noprofile -c '
                        set -u
                        source "$1" || exit 99
                        [[ $2 == "=" ]] || COMP_WORDBREAKS=${COMP_WORDBREAKS//=/}
                        shift 2
                        COMP_WORDS=("$@")
                        COMP_CWORD=$(($# - 1))
                        COMP_LINE="$*"
                        COMP_POINT=${#COMP_LINE}
                        COMPREPLY=()
                        _lagoon_taskctl
                        printf "%s\n" "${COMPREPLY[@]}"' _ "$COMPLETION" "$breaks" "$@" 2>"$TMP/complete.err"
}

# expect DESCRIPTION MODE WANTED... -- WORDS...: MODE "has" (all wanted offered),
# "exactly" (the wanted set, no more), "none" (nothing offered), "not" (none of them).
expect() {
        local what=$1 mode=$2 pathdir=$TMP/bin breaks="="
        shift 2
        local -a wanted=()
        while (($# > 0)) && [[ $1 != -- ]]; do
                case $1 in
                PATH=*) pathdir=${1#PATH=} ;;
                NOBREAK) breaks="" ;;
                *) wanted+=("$1") ;;
                esac
                shift
        done
        shift
        local got
        got=$(complete_line "$pathdir" "$breaks" "$@")
        local rc=$?
        if ((rc != 0)); then
                fail "completion of '$*' ($what): bash exited $rc: $(cat "$TMP/complete.err")"
                return
        fi
        if [[ -s $TMP/complete.err ]]; then
                fail "completion of '$*' ($what) printed on stderr: $(cat "$TMP/complete.err")"
                return
        fi
        local w
        case $mode in
        has)
                for w in "${wanted[@]}"; do
                        grep -qxF -- "$w" <<<"$got" || {
                                fail "completion of '$*' ($what): '$w' not offered; got: $(tr "\n" " " <<<"$got")"
                                return
                        }
                done
                ;;
        exactly)
                if [[ $(printf '%s\n' "${wanted[@]}" | sort) != $(grep . <<<"$got" | sort) ]]; then
                        fail "completion of '$*' ($what): wanted exactly: ${wanted[*]}; got: $(tr "\n" " " <<<"$got")"
                        return
                fi
                ;;
        none)
                if [[ -n $got ]]; then
                        fail "completion of '$*' ($what): wanted nothing; got: $(tr "\n" " " <<<"$got")"
                        return
                fi
                ;;
        not)
                for w in "${wanted[@]}"; do
                        if grep -qxF -- "$w" <<<"$got"; then
                                fail "completion of '$*' ($what): '$w' offered"
                                return
                        fi
                done
                ;;
        esac
        ok
}

if ! command -v bash >/dev/null 2>&1; then
        skip "bash not installed: completion not tested"
else
        reg=$(bash --norc --noprofile -c 'source "$1" && complete -p lagoon-taskctl' _ "$COMPLETION" 2>&1)
        if [[ $reg == *"-F _lagoon_taskctl"*" lagoon-taskctl" ]]; then ok; else fail "complete -p lagoon-taskctl: '$reg'"; fi

        expect "commands" exactly run ls list show inspect logs cancel stop rm prune wait health help -- lagoon-taskctl ""
        expect "commands by prefix" exactly ls list logs -- lagoon-taskctl l
        expect "global options" has --socket= --json --help --version -- lagoon-taskctl --
        expect "run options" has --id= --name= --service= --project= --environment= --timeout= --wait --argv --file= --json --socket= --help -- lagoon-taskctl run --
        expect "run options after others" has --timeout= --wait -- lagoon-taskctl --json run --id=x --
        expect "ls options" exactly --status= --project= --quiet --format= --no-trunc --json --socket= --help -- lagoon-taskctl ls --
        expect "--status= values" exactly pending -- lagoon-taskctl ls --status = pe
        expect "--status= list" exactly running,failed -- lagoon-taskctl ls --status = running,fa
        expect "-o values" exactly wide -- lagoon-taskctl ls -o wi
        expect "logs options" has --follow --socket= -- lagoon-taskctl logs --
        expect "logs has no --json" not --json -- lagoon-taskctl logs --
        expect "one option completes" exactly --no-trunc -- lagoon-taskctl ls --no

        : >"$TMP/stub.log"
        expect "ids for show" exactly task-aaa task-bbb task-ccc -- lagoon-taskctl show ""
        expect "ids for logs after -f" exactly task-aaa task-bbb task-ccc -- lagoon-taskctl logs -f ""
        expect "ids for logs after -t (--timestamps, no value)" exactly task-aaa task-bbb task-ccc -- lagoon-taskctl logs -t ""
        expect "cancel's -t takes a duration" has 10s -- lagoon-taskctl cancel -t ""
        expect "ids by prefix" exactly task-bbb -- lagoon-taskctl wait task-b
        expect "cancel offers only tasks not ended" exactly task-bbb task-ccc -- lagoon-taskctl cancel ""
        expect "stop as cancel" exactly task-bbb task-ccc -- lagoon-taskctl stop ""
        expect "rm offers only tasks ended" exactly task-aaa -- lagoon-taskctl rm ""
        expect "no id for prune" none -- lagoon-taskctl prune ""
        expect "one id only" none -- lagoon-taskctl show task-aaa ""
        expect "no id for health" none -- lagoon-taskctl health ""
        expect "unknown command" none -- lagoon-taskctl frobnicate ""
        if grep -qx -- "ls --json" "$TMP/stub.log"; then ok; else fail "the completion did not run 'lagoon-taskctl ls --json' (stub log: $(cat "$TMP/stub.log"))"; fi

        : >"$TMP/stub.log"
        expect "the socket on the line is used" has task-aaa -- lagoon-taskctl --socket = /tmp/x.sock show ""
        if grep -qx -- "--socket=/tmp/x.sock ls --json" "$TMP/stub.log"; then ok; else fail "--socket not passed on (stub log: $(cat "$TMP/stub.log"))"; fi
        : >"$TMP/stub.log"
        expect "the socket after the command" has task-aaa -- lagoon-taskctl show --socket /tmp/y.sock ""
        if grep -qx -- "--socket=/tmp/y.sock ls --json" "$TMP/stub.log"; then ok; else fail "--socket PATH not passed on (stub log: $(cat "$TMP/stub.log"))"; fi

        expect "--service= values" exactly cli nginx -- lagoon-taskctl run --service = ""
        expect "--service=x values" exactly nginx -- lagoon-taskctl run --service = ng
        expect "--service value" exactly cli nginx -- lagoon-taskctl run --service ""
        expect "--service= without = in COMP_WORDBREAKS" exactly --service=cli --service=nginx NOBREAK -- lagoon-taskctl run --service=
        expect "--project= values" exactly proj1 proj2 -- lagoon-taskctl run --project = ""
        expect "--environment= values" exactly main dev -- lagoon-taskctl run --environment = ""
        expect "--timeout= values" has 30min 1h infinity -- lagoon-taskctl run --timeout = ""
        expect "--id= is free text" none -- lagoon-taskctl run --id = ""
        expect "the task's command" has echo -- lagoon-taskctl run --wait -- ech
        expect "the task's first word" has echo -- lagoon-taskctl run ech
        expect "no options inside the command" not --wait --json -- lagoon-taskctl run -- drush --

        # The daemon is down: nothing offered, nothing printed.
        expect "ids, daemon down (stub)" none PATH="$TMP/badbin" -- lagoon-taskctl show ""
        expect "--service=, daemon down (stub)" none PATH="$TMP/badbin" -- lagoon-taskctl run --service = ""
        expect "commands, daemon down (stub)" has run PATH="$TMP/badbin" -- lagoon-taskctl ""
        if [[ -n ${TASKCTL:-} && -x ${TASKCTL:-} ]]; then
                # The real client, typed as a path: the completion runs that one.
                expect "ids, daemon down (real lagoon-taskctl)" none PATH="$TMP/badbin" -- "$TASKCTL" --socket = "$TMP/no-such.sock" show ""
                expect "cancel, daemon down (real lagoon-taskctl)" none PATH="$TMP/badbin" -- "$TASKCTL" cancel --socket "$TMP/no-such.sock" ""
        else
                echo "NOTE: TASKCTL not set: completion not tried with the real lagoon-taskctl" >&2
        fi
fi

# ---- (d) what the docs say about the shipped files ------------------------------------------

# The unit's journald rate limit, as lagoon-taskd(8) states it (it once said 0 where the
# unit had 1s).
UNIT=$SRCDIR/units/lagoon-taskd.service.in
for key in LogRateLimitIntervalSec LogRateLimitBurst; do
        value=$(sed -n "s/^$key=//p" "$UNIT")
        if [[ -z $value ]]; then
                fail "units/lagoon-taskd.service.in has no $key="
        elif ! grep -qF "*$key=$value*" "$MANDIR/lagoon-taskd.8.scd"; then
                fail "lagoon-taskd.8.scd does not say $key=$value as the unit does"
        else
                ok
        fi
done
# Commands are shown as a root shell runs them: a minimal Debian has no sudo.
for page in "$SRCDIR/README.md" "$MANDIR"/*.scd; do
        if grep -nE '(^|[`$ ])sudo ' "$page" >"$TMP/sudo"; then
                fail "$(basename "$page") uses sudo (say \"as root\"): $(head -1 "$TMP/sudo")"
        else
                ok
        fi
done

echo "test-docs: $checks checks passed, $failures failed, $skipped skipped"
if ((failures > 0)); then
        exit 1
fi
if ((skipped > 0)); then
        exit 77
fi
exit 0
