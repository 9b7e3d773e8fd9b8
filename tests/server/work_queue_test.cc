#include "server/work_queue.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/office_service.h"

namespace casebridge::server {
namespace {

using ::testing::ElementsAre;

// One worker, kept busy while `post` queues tasks that record their names;
// returns the order they ran in once the queue is gone.
std::vector<std::string> RunOrder(
    const std::function<void(
        WorkQueue&, const std::function<std::function<void()>(std::string)>&)>&
        post) {
  absl::Mutex mu;
  std::vector<std::string> order;
  absl::Notification started;
  absl::Notification release;
  {
    WorkQueue work(1);
    work.Post([&] {
      started.Notify();
      release.WaitForNotification();
    });
    started.WaitForNotification();  // the only thread is busy from here
    post(work, [&](std::string name) -> std::function<void()> {
      return [&, name] {
        absl::MutexLock lock(&mu);
        order.push_back(name);
      };
    });
    release.Notify();
  }  // the destructor runs every task posted, then joins
  return order;
}

TEST(WorkQueueTest, FirstTasksRunAheadOfTasksWaiting) {
  EXPECT_THAT(RunOrder([](WorkQueue& work, const auto& record) {
                work.Post(record("routine-1"));
                work.Post(record("routine-2"));
                work.PostFirst(record("urgent-1"));
                work.Post(record("routine-3"));
                work.PostFirst(record("urgent-2"));
              }),
              ElementsAre("urgent-1", "urgent-2", "routine-1", "routine-2",
                          "routine-3"));
}

TEST(WorkQueueTest, AFloodOfFirstTasksLetsTheOthersThrough) {
  static_assert(WorkQueue::kMaxFirstStreak == 4);
  EXPECT_THAT(RunOrder([](WorkQueue& work, const auto& record) {
                work.Post(record("routine-1"));
                work.Post(record("routine-2"));
                for (int i = 1; i <= 10; ++i) {
                  work.PostFirst(record(absl::StrCat("urgent-", i)));
                }
              }),
              ElementsAre("urgent-1", "urgent-2", "urgent-3", "urgent-4",
                          "routine-1", "urgent-5", "urgent-6", "urgent-7",
                          "urgent-8", "routine-2", "urgent-9", "urgent-10"));
}

TEST(WorkQueueTest, EveryTaskRunsOnceBeforeTheQueueIsGone) {
  absl::Mutex mu;
  int runs = 0;
  {
    WorkQueue work(4);
    for (int i = 0; i < 1000; ++i) {
      auto task = [&] {
        absl::MutexLock lock(&mu);
        ++runs;
      };
      if (i % 3 == 0) {
        work.PostFirst(task);
      } else {
        work.Post(task);
      }
    }
  }
  EXPECT_EQ(runs, 1000);
}

TEST(UrgentLaneTest, OnlyAnUrgentMessageGoesFirst) {
  v1::SendMessageRequest request;
  EXPECT_FALSE(SendsUrgent(request));
  request.mutable_message()->set_priority(v1::PRIORITY_ROUTINE);
  EXPECT_FALSE(SendsUrgent(request));
  request.mutable_message()->set_priority(v1::PRIORITY_PRIORITY);
  EXPECT_FALSE(SendsUrgent(request));
  request.mutable_message()->set_priority(v1::PRIORITY_URGENT);
  EXPECT_TRUE(SendsUrgent(request));
}

}  // namespace
}  // namespace casebridge::server
