[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Image.Tests")]
