#!/usr/bin/env bash
# The names a release publishes under, from publish.env (the repository) and Cargo.toml (the
# version): the one place they are derived, for the release scripts and the tests.
#
#   bash scripts/release-names.sh [ROOT]            # prints them as NAME=value lines (sourceable)
#   bash scripts/release-names.sh --check [ROOT]    # every file that names the repository, an
#                                                   # image or the action names these; exit 1 and
#                                                   # one line per mismatch otherwise
#   bash scripts/release-names.sh --apply [ROOT]    # rewrites those places (after a fork changed
#                                                   # publish.env)
#   bash scripts/release-names.sh --published-from OWNER/NAME [ROOT]
#                                                   # exit 1 with the fix unless publish.env names
#                                                   # OWNER/NAME (the release workflow passes the
#                                                   # repository it runs in: a release must not
#                                                   # point users at another owner's images)
#
# What is recognised: `ghcr.io/OWNER/buildstate…` image names, `OWNER/NAME[/setup]@vN` action
# references whose NAME contains `buildstate` (and that major, N), and
# `https://github.com/OWNER/NAME…` links and `--repo OWNER/NAME` (gh) naming a repository
# whose name contains `buildstate`.
set -euo pipefail
mode=print
case "${1:-}" in
    --check | --apply) mode=${1#--}; shift ;;
    --published-from)
        mode=published-from
        publishing=${2:?"--published-from needs the repository the release runs in, OWNER/NAME"}
        shift 2
        ;;
esac
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}

repository=$(sed -n 's/^BUILDSTATE_REPOSITORY=//p' "$root/publish.env")
case "$repository" in
    */*) ;;
    *) echo "publish.env: BUILDSTATE_REPOSITORY must be OWNER/NAME, not \`$repository\`" >&2; exit 2 ;;
esac
# The workspace's version: the first `version = "…"` of Cargo.toml ([workspace.package]).
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
major=${version%%.*}
owner=${repository%%/*}
# GHCR's names are lower case whatever the owner's spelling.
registry_owner=$(printf '%s' "$owner" | tr '[:upper:]' '[:lower:]')

if [ "$mode" = published-from ]; then
    # GitHub's owner and repository names are not case-sensitive.
    if [ "$(printf '%s' "$repository" | tr '[:upper:]' '[:lower:]')" != "$(printf '%s' "$publishing" | tr '[:upper:]' '[:lower:]')" ]; then
        echo "publish.env names \`$repository\`, but this release is published from \`$publishing\`: the action.yml and the docs it ships would point at \`$repository\`'s images and releases. Set BUILDSTATE_REPOSITORY=$publishing in publish.env, run \`bash scripts/release-names.sh --apply\`, commit, and tag again." >&2
        exit 1
    fi
    echo "ok: publish.env names $repository"
    exit 0
fi

if [ "$mode" = print ]; then
    cat <<NAMES
REPOSITORY=$repository
VERSION=$version
MAJOR=$major
IMAGE=ghcr.io/$registry_owner/buildstate
SERVER_IMAGE=ghcr.io/$registry_owner/buildstate-server
ACTION=$repository@v$major
SETUP_ACTION=$repository/setup@v$major
RELEASES=https://github.com/$repository/releases
NAMES
    exit 0
fi

# Every text file a user reads or GitHub runs, outside build output and vendored files.
mapfile -t files < <(cd "$root" && find . \( -name target -o -name .git -o -name node_modules -o -name vendor \) -prune \
    -o -type f \( -name '*.yml' -o -name '*.yaml' -o -name '*.md' -o -name Cargo.toml \) -print | sort)

export repository major registry_owner mode
status=0
for file in "${files[@]}"; do
    (cd "$root" && perl -i -ne '
        BEGIN { $bad = 0 }
        my $line = $_;
        my $expected_repo = $ENV{repository};
        my ($want_owner, $want_name) = split m{/}, $expected_repo, 2;
        my $problems = "";
        # ghcr.io/OWNER/buildstate[-server]
        while ($line =~ m{ghcr\.io/([A-Za-z0-9_.-]+)/buildstate}g) {
            $problems .= " image owner `$1`" if $1 ne $ENV{registry_owner};
        }
        # OWNER/NAME[/setup]@vN: an action reference
        while ($line =~ m{(?<![\w./-])([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]*buildstate[A-Za-z0-9_.-]*)((?:/setup)?)\@v(\d+)\b}g) {
            $problems .= " action `$1$2\@v$3`" if $1 ne $expected_repo || $3 ne $ENV{major};
        }
        # https://github.com/OWNER/NAME
        while ($line =~ m{https://github\.com/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]*buildstate[A-Za-z0-9_.-]*)}g) {
            $problems .= " link `$1`" if $1 ne $expected_repo;
        }
        # gh ... --repo OWNER/NAME
        while ($line =~ m{--repo ([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]*buildstate[A-Za-z0-9_.-]*)}g) {
            $problems .= " repository `$1`" if $1 ne $expected_repo;
        }
        if ($ENV{mode} eq "apply") {
            $line =~ s{--repo [A-Za-z0-9_.-]+/[A-Za-z0-9_.-]*buildstate[A-Za-z0-9_.-]*}{--repo $expected_repo}g;
            $line =~ s{ghcr\.io/[A-Za-z0-9_.-]+/buildstate}{ghcr.io/$ENV{registry_owner}/buildstate}g;
            $line =~ s{(?<![\w./-])[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]*buildstate[A-Za-z0-9_.-]*((?:/setup)?)\@v\d+\b}{$expected_repo$1\@v$ENV{major}}g;
            $line =~ s{https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]*buildstate[A-Za-z0-9_.-]*}{https://github.com/$expected_repo}g;
        } elsif ($problems ne "") {
            print STDERR "$ARGV:$.:$problems, expected `$expected_repo` (publish.env)\n";
            $bad = 1;
        }
        print $line;
        close ARGV if eof;
        END { exit $bad }
    ' "$file") || status=1
done
if [ "$mode" = check ] && [ "$status" -eq 0 ]; then
    echo "ok: ${#files[@]} files name $repository (images ghcr.io/$registry_owner/buildstate*, major v$major)"
fi
exit "$status"
