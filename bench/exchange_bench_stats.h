// Small statistics helpers for casebridge-bench.
#ifndef CASEBRIDGE_BENCH_EXCHANGE_BENCH_STATS_H_
#define CASEBRIDGE_BENCH_EXCHANGE_BENCH_STATS_H_

#include <algorithm>
#include <cstddef>
#include <vector>

namespace casebridge::bench {

// The `q`-quantile (0..1, nearest rank) of `values`, which must be sorted;
// 0 for none.
inline double SortedQuantile(const std::vector<double>& values, double q) {
  if (values.empty()) return 0;
  const auto rank = static_cast<size_t>(q * static_cast<double>(values.size()));
  return values[std::min(rank, values.size() - 1)];
}

struct Percentiles {
  size_t count = 0;
  double p50 = 0;
  double p99 = 0;
  double p999 = 0;
  double max = 0;
};

// Sorts `values` and reads its percentiles.
inline Percentiles PercentilesOf(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  Percentiles p;
  p.count = values.size();
  p.p50 = SortedQuantile(values, 0.50);
  p.p99 = SortedQuantile(values, 0.99);
  p.p999 = SortedQuantile(values, 0.999);
  p.max = values.empty() ? 0 : values.back();
  return p;
}

}  // namespace casebridge::bench

#endif  // CASEBRIDGE_BENCH_EXCHANGE_BENCH_STATS_H_
