#!/usr/bin/env bash
# Lists the engine's module dependencies ("checkout -> catalog": checkout names
# crate::catalog) and fails if they form a cycle, or if Lance is used outside catalog/ (and,
# in sql/, outside tables.rs). The test command runs it.
#
# A module is a top-level file or folder of engine/src; a name re-exported by lib.rs
# (crate::Library) counts as its module. lib.rs itself (Error, Result) belongs to no module.
# A method of `Library` counts as the module that defines it: `self.prune()` in gc is a
# dependency of gc on the module whose `impl Library` holds `fn prune` (`self` counts only in
# files that have an `impl Library`).
#   bash scripts/modules.sh          the dependencies, one per line, then the layers
set -euo pipefail
cd "$(dirname "$0")/../engine/src"

edges=$(perl -e '
  # lib.rs: which module each re-exported name comes from.
  open my $lib, "<", "lib.rs" or die;
  my (%home, %module);
  while (<$lib>) {
    $module{$1} = 1 if /^\s*(?:pub(?:\(crate\))?\s+)?mod\s+(\w+)/;
    if (/^\s*pub(?:\(crate\))?\s+use\s+(\w+)::(.*);/) {
      my ($m, $rest) = ($1, $2);
      $rest =~ s/[{}]//g;
      $home{(split /\s+as\s+/)[-1] =~ s/\s//gr} = $m for split /,/, $rest;
    }
  }
  my @files = grep { $_ ne "lib.rs" } glob("*.rs */*.rs */*/*.rs");
  my %method;
  for my $file (@files) {
    open my $fh, "<", $file or die;
    my ($module, $inside) = ($file =~ s{[/.].*}{}r, 0);
    while (<$fh>) {
      $inside = 1 if /^impl Library \{/;
      $inside = 0 if /^\}/;
      $method{$1} = $module if $inside && /^    (?:pub(?:\(crate\))?\s+)?(?:async\s+)?fn\s+(\w+)/;
    }
  }
  for my $file (@files) {
    my $from = $file =~ s{[/.].*}{}r;
    open my $fh, "<", $file or die;
    my $text = join "", grep { !m{^\s*//} } <$fh>;
    my %to;
    # crate::name and crate::{a::x, b, ...}: the first name of each path.
    while ($text =~ /\bcrate::(\w+|\{)/g) {
      if ($1 ne "{") { $to{$1} = 1; next }
      my ($depth, $start, $group) = (1, pos($text), "");
      while ($depth > 0 && $text =~ /([{}])/g) { $depth += $1 eq "{" ? 1 : -1 }
      $group = substr($text, $start, pos($text) - $start - 1);
      1 while $group =~ s/\{[^{}]*\}//g;
      $to{(split /::/)[0] =~ s/\s//gr} = 1 for split /,/, $group;
    }
    # Library methods: self.prune() (in a file with an `impl Library`; elsewhere `self` is
    # something else), library.prune(), lib.prune().
    my $receivers = $text =~ /^impl Library \{/m ? "self|library|lib" : "library|lib";
    while ($text =~ /\b(?:$receivers)\s*\.\s*(\w+)\s*\(/g) {
      $to{"method $1"} = 1 if $method{$1};
    }
    for my $name (keys %to) {
      if ($name =~ /^method (\w+)/) {
        print "$from $method{$1}\n" if $method{$1} ne $from;
        next;
      }
      my $m = $module{$name} ? $name : $home{$name};
      print "$from $m\n" if defined $m && $m ne $from;
    }
  }
' | sort -u)

echo "$edges" | awk 'NF { print $1 " -> " $2 }'
# tsort names a cycle on standard error and exits non-zero.
if ! order=$(echo "$edges" | tsort 2>/tmp/modules-cycle.$$); then
  echo "engine modules form a cycle:" >&2
  grep -v '^tsort: -: input contains a loop:' /tmp/modules-cycle.$$ | sed 's/^tsort: /  /' >&2
  rm -f /tmp/modules-cycle.$$
  exit 1
fi
rm -f /tmp/modules-cycle.$$
echo "no cycles; from the top: $(echo "$order" | tr '\n' ' ')"

# Only catalog/ opens Lance; sql/ reads the same datasets in tables.rs and, in a cluster's
# executors, distributed/fragments.rs alone.
outside=$( (grep -rlE '\blance(_index)?::' --include='*.rs' . | grep -v '^\./catalog/' || true;
            grep -rlE '\blance(_index)?::' --include='*.rs' ../../sql/src | grep -vE '/(tables|distributed/fragments)\.rs$' || true) )
if [ -n "$outside" ]; then
  echo "Lance is used outside engine/src/catalog/, sql/src/tables.rs and sql/src/distributed/fragments.rs:" >&2
  echo "$outside" | sed 's/^/  /' >&2
  exit 1
fi
