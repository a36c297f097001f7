using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Colo.Proxy.Bench;

/// <summary>
/// Waits until a <see cref="Stopwatch"/> timestamp without occupying a core: on Linux (where the timestamp is
/// CLOCK_MONOTONIC in ns) an absolute <c>clock_nanosleep</c> to 10 µs before the target with the thread's timer slack
/// set to 1 ns, then a short spin; elsewhere a <see cref="Thread.Yield"/> spin.
/// </summary>
public static partial class Pacer
{
    private const int ClockMonotonic = 1;
    private const int TimerAbsTime = 1;
    private const int PrSetTimerSlack = 29;
    private const long SpinNs = 10_000;

    private static readonly bool UseNanosleep = OperatingSystem.IsLinux() && Stopwatch.Frequency == 1_000_000_000;

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Sec;
        public long Nsec;
    }

    [LibraryImport("libc", SetLastError = false)]
    private static partial int clock_nanosleep(int clockId, int flags, in Timespec request, IntPtr remain);

    [LibraryImport("libc", SetLastError = false)]
    private static partial int prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);

    /// <summary>Call once on the pacing thread: a 1 ns timer slack (Linux default 50 µs) so wake-ups are on time.</summary>
    public static void PrepareThread()
    {
        if (UseNanosleep)
        {
            _ = prctl(PrSetTimerSlack, 1, 0, 0, 0);
        }
    }

    /// <summary>Returns at or shortly after <paramref name="target"/>.</summary>
    /// <param name="target">A <see cref="Stopwatch.GetTimestamp"/> value.</param>
    /// <returns>The timestamp on return.</returns>
    public static long WaitUntil(long target)
    {
        long now = Stopwatch.GetTimestamp();
        if (UseNanosleep && target - now > SpinNs)
        {
            long wake = target - SpinNs;
            var ts = new Timespec { Sec = wake / 1_000_000_000, Nsec = wake % 1_000_000_000 };
            _ = clock_nanosleep(ClockMonotonic, TimerAbsTime, in ts, IntPtr.Zero);
            now = Stopwatch.GetTimestamp();
        }
        while (now < target)
        {
            Thread.SpinWait(20);
            now = Stopwatch.GetTimestamp();
        }
        return now;
    }
}
