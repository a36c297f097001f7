[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Checkpoint.Tests")]
