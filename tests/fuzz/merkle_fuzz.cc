// The Merkle tree (core/merkle.h), against RFC 6962's definition of the tree
// hash written out recursively below. From the input: a tree of 1-300
// leaves, a leaf, an earlier size, a bit to flip; then any indexes, sizes and
// proof hashes, as a peer or an evidence bundle could send them. For the
// tree built, every root agrees with the definition, the proofs made verify
// and a proof with one bit flipped does not. For the proofs sent, the
// verifiers refuse or accept without reading out of bounds or overflowing,
// whatever the sizes (up to 2^64 - 1).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/merkle.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

namespace merkle = casebridge::merkle;

// RFC 6962 §2.1: MTH(D[n]) with k the largest power of two below n.
std::string TreeHash(const std::vector<std::string>& leaves, size_t begin,
                     size_t end) {
  if (end - begin == 1) return leaves[begin];
  size_t k = 1;
  while (k * 2 < end - begin) k *= 2;
  return merkle::NodeHash(TreeHash(leaves, begin, begin + k),
                          TreeHash(leaves, begin + k, end));
}

class Nodes : public merkle::NodeSource {
 public:
  void Put(int level, uint64_t index, absl::string_view hash) {
    nodes_[{level, index}] = std::string(hash);
  }
  absl::StatusOr<std::string> Node(int level, uint64_t index) override {
    auto it = nodes_.find({level, index});
    FUZZ_CHECK(it != nodes_.end());  // asked only for complete subtrees
    return it->second;
  }

 private:
  std::map<std::pair<int, uint64_t>, std::string> nodes_;
};

std::vector<std::string> Flipped(std::vector<std::string> proof, uint64_t bit) {
  const uint64_t bits = proof.size() * merkle::kHashSize * 8;
  bit %= bits;
  std::string& hash = proof[bit / (merkle::kHashSize * 8)];
  const size_t byte = (bit / 8) % merkle::kHashSize;
  hash[byte] = static_cast<char>(hash[byte] ^ (1 << (bit % 8)));
  return proof;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  casebridge::fuzz::Input in(data, size);
  const uint64_t n = 1 + in.U16() % 300;
  const uint64_t index = in.U16() % n;
  const uint64_t earlier = 1 + in.U16() % n;
  const uint64_t flip = in.U64();

  std::vector<std::string> leaves;
  Nodes nodes;
  merkle::CompactRange range;
  std::vector<std::string> roots;  // roots[s - 1]: root of the first s
  for (uint64_t i = 0; i < n; ++i) {
    leaves.push_back(merkle::LeafHash(absl::StrCat("entry ", i)));
    range.Append(leaves.back(),
                 [&](int level, uint64_t at, absl::string_view hash) {
                   nodes.Put(level, at, hash);
                 });
    roots.push_back(range.Root());
  }
  FUZZ_CHECK(roots[n - 1] == TreeHash(leaves, 0, n));
  FUZZ_CHECK(roots[earlier - 1] == TreeHash(leaves, 0, earlier));
  const std::string& root = roots[n - 1];
  const absl::StatusOr<std::string> stored_root = merkle::RootAt(n, nodes);
  FUZZ_CHECK(stored_root.ok() && *stored_root == root);

  const auto inclusion = merkle::InclusionProof(index, n, nodes);
  FUZZ_CHECK(inclusion.ok());
  FUZZ_CHECK(
      merkle::VerifyInclusion(index, n, leaves[index], *inclusion, root).ok());
  if (!inclusion->empty()) {
    FUZZ_CHECK(!merkle::VerifyInclusion(index, n, leaves[index],
                                        Flipped(*inclusion, flip), root)
                    .ok());
  }
  FUZZ_CHECK(!merkle::VerifyInclusion(index, n, leaves[(index + 1) % n],
                                      *inclusion, root)
                  .ok() ||
             n == 1);

  const auto consistency = merkle::ConsistencyProof(earlier, n, nodes);
  FUZZ_CHECK(consistency.ok());
  const std::string& earlier_root = roots[earlier - 1];
  FUZZ_CHECK(
      merkle::VerifyConsistency(earlier, n, earlier_root, root, *consistency)
          .ok());
  if (!consistency->empty()) {
    FUZZ_CHECK(!merkle::VerifyConsistency(earlier, n, earlier_root, root,
                                          Flipped(*consistency, flip))
                    .ok());
  }

  // Whatever a caller sends: sizes and indexes of any magnitude, hashes of
  // any length. Only a crash or undefined behaviour is a failure here.
  const uint64_t any_index = in.U64();
  const uint64_t any_size = in.U64();
  const uint64_t any_size2 = in.U64();
  const std::string any_leaf = in.Bytes(merkle::kHashSize);
  const std::string any_root = in.Bytes(merkle::kHashSize);
  std::vector<std::string> any_proof;
  while (!in.empty() && any_proof.size() < 70) {
    const size_t length = in.U8() % 40;
    any_proof.push_back(in.Bytes(length));
  }
  (void)merkle::VerifyInclusion(any_index, any_size, any_leaf, any_proof,
                                any_root);
  (void)merkle::VerifyConsistency(any_size, any_size2, any_leaf, any_root,
                                  any_proof);
  (void)merkle::VerifyConsistency(any_index % (n + 1), n, earlier_root, root,
                                  any_proof);
  return 0;
}
