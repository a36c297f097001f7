using Colo.Nbd.Internal;

namespace Colo.Nbd.Tests;

public sealed class InFlightLimiterTests
{
    [Fact]
    public async Task CountLimit_BlocksUntilARelease()
    {
        var limiter = new InFlightLimiter(2, 1000);
        Assert.True(await limiter.AcquireAsync(1));
        Assert.True(await limiter.AcquireAsync(1));
        ValueTask<bool> third = limiter.AcquireAsync(1);
        Assert.False(third.IsCompleted);
        limiter.Release(1);
        Assert.True(await third.AsTask().WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(2, limiter.Count);
    }

    [Fact]
    public async Task ByteLimit_BlocksUntilEnoughIsReleased_ButAnOversizedRequestPassesWhenIdle()
    {
        var limiter = new InFlightLimiter(10, 100);
        Assert.True(await limiter.AcquireAsync(60));
        ValueTask<bool> second = limiter.AcquireAsync(60);
        Assert.False(second.IsCompleted);
        limiter.Release(60);
        Assert.True(await second.AsTask().WaitAsync(TimeSpan.FromSeconds(5)));
        limiter.Release(60);
        Assert.True(await limiter.AcquireAsync(1000)); // idle: always admitted
    }

    [Fact]
    public async Task Close_WakesTheWaiterWithFalse_AndRefusesLaterOnes()
    {
        var limiter = new InFlightLimiter(1, 100);
        Assert.True(await limiter.AcquireAsync(1));
        ValueTask<bool> waiting = limiter.AcquireAsync(1);
        limiter.Close();
        Assert.False(await waiting.AsTask().WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.False(await limiter.AcquireAsync(1));
    }

    [Fact]
    public async Task WaitIdle_CompletesWhenTheLastReleases()
    {
        var limiter = new InFlightLimiter(4, 100);
        Assert.True(limiter.WaitIdleAsync().IsCompleted);
        Assert.True(await limiter.AcquireAsync(1));
        Assert.True(await limiter.AcquireAsync(1));
        Task idle = limiter.WaitIdleAsync();
        limiter.Release(1);
        Assert.False(idle.IsCompleted);
        limiter.Release(1);
        await idle.WaitAsync(TimeSpan.FromSeconds(5));
    }
}
