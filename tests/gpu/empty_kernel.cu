// Empty-kernel launch throughput: launches per second through the runtime API.
#include <chrono>
#include <cstdio>
__global__ void empty() {}
int main() {
    empty<<<1, 1>>>();
    cudaDeviceSynchronize();
    const int n = 200000;
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < n; i++) empty<<<1, 1>>>();
    cudaDeviceSynchronize();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("{\"check\": \"launch\", \"us_per_launch\": %.4f}\n", s * 1e6 / n);
    return 0;
}
