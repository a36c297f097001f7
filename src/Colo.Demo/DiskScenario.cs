using System.Security.Cryptography;

namespace Colo.Demo;

/// <summary>
/// The seed of <c>colo demo --scenario disk</c>: it fixes the moment the primary's QEMU is killed, uniformly within
/// [<see cref="KillWindowStart"/>, <see cref="KillWindowEnd"/>] of the duration. The mapping is our own
/// (SplitMix64), so a seed gives the same moment on every machine and .NET version.
/// </summary>
public static class DiskScenario
{
    /// <summary>Earliest kill moment, as a fraction of the duration.</summary>
    public const double KillWindowStart = 0.2;

    /// <summary>Latest kill moment, as a fraction of the duration.</summary>
    public const double KillWindowEnd = 0.8;

    /// <summary>A fresh random seed, 1..2^31-1.</summary>
    public static int NewSeed() => RandomNumberGenerator.GetInt32(1, int.MaxValue);

    /// <summary>
    /// Seconds after the client starts at which the primary is killed for <paramref name="seed"/>: in
    /// [0.2, 0.8] × <paramref name="durationS"/>, rounded to milliseconds.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="durationS"/> is not positive.</exception>
    public static double KillMomentS(int seed, double durationS)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(durationS);
        double u = Unit(seed);
        return Math.Round(durationS * (KillWindowStart + (KillWindowEnd - KillWindowStart) * u), 3);
    }

    /// <summary>A deterministic number in [0, 1) from <paramref name="seed"/> (one SplitMix64 step).</summary>
    public static double Unit(int seed)
    {
        ulong z = unchecked((ulong)(uint)seed + 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        z ^= z >> 31;
        return (z >> 11) * (1.0 / (1UL << 53));
    }
}
