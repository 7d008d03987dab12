// Unicode tables for NFC (canonical decomposition, canonical combining class), generated into
// unicode_nfc_tables.cpp from Python's unicodedata by the script below
// (`python3 script.py > harness/tokenizer/unicode_nfc_tables.cpp`). Hangul syllables are not
// listed: unicode_nfc.cpp composes and decomposes them algorithmically.
//
// clang-format off
//   import sys
//   import unicodedata as u
//   dec, ccc = [], []
//   for cp in range(0x110000):
//       c = chr(cp)
//       d = u.decomposition(c)
//       if d and not d.startswith('<'):
//           parts = [int(x, 16) for x in d.split()]
//           comp = len(parts) == 2 and u.normalize('NFC', ''.join(map(chr, parts))) == c
//           second = parts[1] if len(parts) == 2 else 0
//           dec.append((cp, parts[0], second, 1 if comp else 0))
//       k = u.combining(c)
//       if k:
//           if ccc and ccc[-1][1] == cp - 1 and ccc[-1][2] == k:
//               ccc[-1][1] = cp
//           else:
//               ccc.append([cp, cp, k])
//
//   def rows(items):  # packed into lines of at most 100 columns
//       lines, cur = [], '   '
//       for it in items:
//           if len(cur) + len(it) > 100:
//               lines.append(cur)
//               cur = '   '
//           cur += (' ' if cur == '   ' else '') + it
//       return '\n'.join(lines + [cur])
//
//   print(f'// Generated from Python {sys.version.split()[0]} unicodedata '
//         f'(Unicode {u.unidata_version})')
//   print('// by the script in unicode_nfc_tables.h. Do not edit by hand.')
//   print('// clang-format off')
//   print('#include "harness/tokenizer/unicode_nfc_tables.h"\n')
//   print('namespace kvb::tok::nfc_tables {\n')
//   print('const CanonicalDecomposition kDecompositions[] = {')
//   print(rows(['{0x%X,0x%X,0x%X,%d},' % t for t in dec]))
//   print('};')
//   print('const size_t kNumDecompositions = std::size(kDecompositions);\n')
//   print('const CombiningClassRange kCombiningClasses[] = {')
//   print(rows(['{0x%X,0x%X,%d},' % tuple(t) for t in ccc]))
//   print('};')
//   print('const size_t kNumCombiningClasses = std::size(kCombiningClasses);\n')
//   print('}  // namespace kvb::tok::nfc_tables')
// clang-format on
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>

namespace kvb::tok::nfc_tables {

// One canonical decomposition mapping: code_point -> first [second]. second == 0 for a singleton.
// composable: first+second compose back to code_point in NFC (a primary composite, i.e. not in
// the full composition exclusions).
struct CanonicalDecomposition {
  uint32_t code_point, first, second;
  uint8_t composable;
};

// Code points first..last (inclusive) have canonical combining class ccc (all others have 0).
struct CombiningClassRange {
  uint32_t first, last;
  uint8_t ccc;
};

extern const CanonicalDecomposition kDecompositions[];  // sorted by code_point
extern const size_t kNumDecompositions;
extern const CombiningClassRange kCombiningClasses[];  // sorted, disjoint
extern const size_t kNumCombiningClasses;

}  // namespace kvb::tok::nfc_tables
